/*
 * Natalia's retain guard: a Mosquitto 2.0 plugin (API v5) that lets only a device's `status`
 * be retained.
 *
 * Why: the broker keeps a retained message in its persistence file, in clear, until someone
 * overwrites it, and hands it to every new subscription. Devices and the OwnTracks app (which
 * retains by default) would leave alarms and positions there for ever. Mosquitto's ACL cannot
 * see the retain flag; this plugin can.
 *
 * - A PUBLISH on any topic but natalia/v1/devices/{id}/status is passed on with its retain
 *   flag cleared (MOSQ_EVT_MESSAGE): subscribers get it as usual, the broker keeps no copy. The
 *   publisher is not refused, so an OwnTracks phone that retains still reports its position.
 * - A will cannot be changed, only refused: a retained will on another topic is denied when it
 *   is sent (MOSQ_EVT_ACL_CHECK, write access with retain set, from a client that is
 *   disconnecting or whose session is being taken over). The device's own will, a retained
 *   `status` `offline`, is untouched.
 *
 * Everything else is left to the ACL file: the ACL callback answers MOSQ_ERR_PLUGIN_DEFER.
 * Mosquitto runs plugin callbacks in the order they were registered and loads plugins before
 * its own password and ACL files, so this check runs first.
 *
 * Built by broker/plugin.py (cc, headers from Debian's mosquitto-dev and libmosquitto-dev).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define STATUS_PREFIX "natalia/v1/devices/"
#define STATUS_SUFFIX "/status"

static mosquitto_plugin_id_t *plugin_id = NULL;

/* Clients that disconnected (their will, if any, is sent now or after its delay): an open
 * addressing set of pointers. A pointer leaves it when its will is checked, or when a new
 * connection authenticates at the same address (Mosquitto reuses freed memory). */
static const struct mosquitto **gone = NULL;
static size_t gone_capacity = 0;
static size_t gone_count = 0;

/* The client that authenticated in the event just before this one: Mosquitto sends the will
 * of a session it takes over right after the new connection authenticates. */
static const struct mosquitto *authenticating = NULL;

static bool may_retain(const char *topic)
{
	size_t prefix = strlen(STATUS_PREFIX);
	size_t suffix = strlen(STATUS_SUFFIX);
	size_t length;
	const char *id;

	if(topic == NULL || strncmp(topic, STATUS_PREFIX, prefix) != 0){
		return false;
	}
	id = topic + prefix;
	length = strlen(id);
	if(length <= suffix || strcmp(id + length - suffix, STATUS_SUFFIX) != 0){
		return false;
	}
	return memchr(id, '/', length - suffix) == NULL;
}

static size_t slot_of(const struct mosquitto *client)
{
	uintptr_t value = (uintptr_t)client;
	value ^= value >> 17;
	value *= (uintptr_t)0x9E3779B97F4A7C15ull;
	return (size_t)(value >> 7) & (gone_capacity - 1);
}

static bool gone_grow(void)
{
	const struct mosquitto **old = gone;
	size_t old_capacity = gone_capacity;
	size_t capacity = old_capacity ? old_capacity * 2 : 1024;
	size_t i, slot;

	gone = mosquitto_calloc(capacity, sizeof(*gone));
	if(gone == NULL){
		gone = old;
		return false;
	}
	gone_capacity = capacity;
	for(i = 0; i < old_capacity; i++){
		if(old[i] == NULL) continue;
		slot = slot_of(old[i]);
		while(gone[slot] != NULL) slot = (slot + 1) & (capacity - 1);
		gone[slot] = old[i];
	}
	mosquitto_free(old);
	return true;
}

static size_t gone_find(const struct mosquitto *client)
{
	size_t slot;

	if(gone_capacity == 0) return SIZE_MAX;
	slot = slot_of(client);
	while(gone[slot] != NULL){
		if(gone[slot] == client) return slot;
		slot = (slot + 1) & (gone_capacity - 1);
	}
	return SIZE_MAX;
}

static void gone_add(const struct mosquitto *client)
{
	size_t slot;

	if(gone_find(client) != SIZE_MAX) return;
	if((gone_count + 1) * 2 > gone_capacity && !gone_grow()){
		return; /* out of memory: the will is not refused, nothing else goes wrong */
	}
	slot = slot_of(client);
	while(gone[slot] != NULL) slot = (slot + 1) & (gone_capacity - 1);
	gone[slot] = client;
	gone_count++;
}

/* Linear probing deletion: move later entries of the same run back into the hole. */
static void gone_remove(const struct mosquitto *client)
{
	size_t hole = gone_find(client);
	size_t next, home;

	if(hole == SIZE_MAX) return;
	gone[hole] = NULL;
	gone_count--;
	next = (hole + 1) & (gone_capacity - 1);
	while(gone[next] != NULL){
		home = slot_of(gone[next]);
		if(((next - home) & (gone_capacity - 1)) >= ((next - hole) & (gone_capacity - 1))){
			gone[hole] = gone[next];
			gone[next] = NULL;
			hole = next;
		}
		next = (next + 1) & (gone_capacity - 1);
	}
}

static bool same_client_id(const struct mosquitto *a, const struct mosquitto *b)
{
	const char *id_a = mosquitto_client_id(a);
	const char *id_b = mosquitto_client_id(b);
	return id_a != NULL && id_b != NULL && strcmp(id_a, id_b) == 0;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *message = event_data;
	(void)event;
	(void)userdata;

	authenticating = NULL;
	if(message->retain && !may_retain(message->topic)){
		message->retain = false;
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *check = event_data;
	const struct mosquitto *taking_over = authenticating;
	bool is_will;
	(void)event;
	(void)userdata;

	authenticating = NULL;
	if(check->access != MOSQ_ACL_WRITE){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	is_will = gone_find(check->client) != SIZE_MAX;
	if(is_will){
		gone_remove(check->client); /* one will per connection */
	}else if(taking_over != NULL && taking_over != check->client){
		is_will = same_client_id(taking_over, check->client);
	}
	if(is_will && check->retain && !may_retain(check->topic)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"Denied retained will of %s: only status may be retained.",
				mosquitto_client_id(check->client));
		return MOSQ_ERR_ACL_DENIED;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *auth = event_data;
	(void)event;
	(void)userdata;

	gone_remove(auth->client); /* a new connection at a reused address */
	authenticating = auth->client;
	return MOSQ_ERR_PLUGIN_DEFER;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *disconnect = event_data;
	(void)event;
	(void)userdata;

	authenticating = NULL;
	gone_add(disconnect->client);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int rc;
	(void)userdata;
	(void)options;
	(void)option_count;

	plugin_id = identifier;
	rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL);
	}
	return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;

	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	mosquitto_free(gone);
	gone = NULL;
	gone_capacity = 0;
	gone_count = 0;
	return MOSQ_ERR_SUCCESS;
}
