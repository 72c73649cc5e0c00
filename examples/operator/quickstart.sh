#!/usr/bin/env bash
# Operator quick start: a site directory, the broker, the hub, one defender with a wristband
# and an HQ contact, then a simulated alarm and the alarm list. Stops what it started.
#
#   examples/operator/quickstart.sh [SITE_DIR] [BROKER_PORT] [HTTP_PORT]
set -euo pipefail

SITE=${1:-./natalia-site}
PORT=${2:-1883}
HTTP_PORT=${3:-8080}
CONFIG="$SITE/hub.toml"

natalia init "$SITE" --port "$PORT" --http-port "$HTTP_PORT"

natalia broker run -c "$CONFIG" > "$SITE/broker.log" 2>&1 &
broker=$!
natalia hub run -c "$CONFIG" --ready-file "$SITE/hub.ready" 2> "$SITE/hub.log" &
hub=$!
trap 'kill "$hub" "$broker" 2>/dev/null; wait "$hub" "$broker" 2>/dev/null || true' EXIT

natalia defender add "Natalia E." --timezone Europe/Moscow -c "$CONFIG"
natalia contact add "HQ duty desk" console:// --hq -c "$CONFIG"
# A real deployment adds e-mail, SMS and chat channels, e.g.:
#   natalia contact add "Sister" "mailtos://user:app-password@gmail.com?to=sister@example.org" --defender 1 -c "$CONFIG"
#   natalia contact add "HQ Telegram" "tgram://BOT_TOKEN/CHAT_ID" --hq -c "$CONFIG"

# The password and the signing key are printed once; keep them for the wristband's provisioning.
REGISTERED=$(natalia device add wb-0001 --defender 1 -c "$CONFIG")
NATALIA_DEVICE_PASSWORD=$(printf '%s\n' "$REGISTERED" | sed -n 's/.*password (shown once): //p')
NATALIA_DEVICE_KEY=$(printf '%s\n' "$REGISTERED" | sed -n 's/.*key (shown once): //p')
export NATALIA_DEVICE_PASSWORD NATALIA_DEVICE_KEY

for _ in $(seq 1 100); do [ -f "$SITE/hub.ready" ] && break; sleep 0.1; done

# The simulated wristband pulls its alarm and waits for the hub's ack.
natalia device simulate --port "$PORT" --device-id wb-0001 --state-dir "$SITE/wristband" \
    --kind panic --lat 43.3178 --lon 45.6982 --accuracy 12 --wait 30

natalia alarms list -c "$CONFIG"
natalia alarms show A1 -c "$CONFIG"
