"""The emergency fund's integration: submit a relocation request, then HQ reviews it.

Against the demo hub (``natalia demo --serve`` prints how to load its tokens)::

    set -a; . /tmp/natalia-demo-XXXX/api.env; set +a
    .venv/bin/python examples/sdk/fund_request.py

``NATALIA_TOKEN`` is the fund system's token (role ``integration``: it submits and reads
requests); ``NATALIA_HQ_TOKEN`` is an HQ operator's (role ``hq``: it reviews them). The demo's
defender is 1 and its alarm is A1; pass others with ``--defender`` and ``--alarm``.
"""

from __future__ import annotations

import argparse
import os
from decimal import Decimal

from sdk import Client, ConflictError
from sdk.models import FundPurpose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defender", type=int, default=1)
    parser.add_argument("--alarm", default="A1", help="the alarm the request follows")
    args = parser.parse_args()

    url = os.environ["NATALIA_URL"]
    with Client.from_env() as fund, Client(url, os.environ["NATALIA_HQ_TOKEN"]) as hq:
        request = fund.fund_requests.create(
            defender_id=args.defender,
            alarm_id=args.alarm,
            purpose=FundPurpose.TEMPORARY_RELOCATION,
            amount=Decimal("1800.00"),
            currency="EUR",
            startup_grant=Decimal("500.00"),
            description="Three months in a safe city for the defender and two children.",
        )
        print(
            f"submitted fund request {request.id}: {request.purpose.value}, "
            f"{request.amount} {request.currency} + start-up grant {request.startup_grant}"
        )

        hq.fund_requests.start_review(request.id, note="documents received")
        hq.fund_requests.approve(request.id, note="approved by the fund board")
        paid = hq.fund_requests.disburse(request.id, note="bank transfer sent")
        print(f"fund request {paid.id} is {paid.state.value}")

        try:
            hq.fund_requests.reject(request.id)
        except ConflictError as exc:  # a paid-out request is final
            print(f"cannot reject it any more ({exc.code}): {exc.detail}")

        print("audit trail:")
        for entry in fund.fund_requests.history(request.id):
            change = f"{entry.from_state or '-'} -> {entry.to_state or '-'}"
            when = f"{entry.at:%H:%M:%S}"
            print(f"  {when}  {entry.actor:<18} {entry.action:<8} {change}  {entry.note}")


if __name__ == "__main__":
    main()
