/* call.c - tokend-call: one unary gRPC call to tokend, JSON in and out.
 *
 *   tokend-call [--tls CA.pem] [--timeout MS] [--repeat N] [-H name:value]...
 *               HOST:PORT METHOD [JSON | -]
 *
 * Why it exists: it is an independent client - the gRPC C core, the stack
 * every official gRPC library but Go and Java sits on - so the integration
 * tests prove tokend's native gRPC against it and not only against itself.
 * It also serves people at a shell, as grpcurl would, with no schema files:
 * the method's messages come from the descriptors compiled in from gen/, and
 * JSON maps to them with the server's own transcoder.
 *
 * METHOD is Service/Method, e.g. tokend.v1.Tokend/TokenById, or the full
 * path /tokend.v1.Tokend/TokenById. JSON defaults to {}; "-" reads stdin.
 * -H adds call metadata (access-token, app_id, user_id, group_id, ...).
 * --repeat N makes the call N times on one channel, stops at the first
 * failure, and prints the last reply.
 *
 * On success the reply's JSON (the "data" of the HTTP envelope) goes to
 * stdout and the exit status is 0. A call that ends with another gRPC
 * status prints "grpc-status N: message" on stderr and exits with N, so
 * scripts can tell the statuses apart. Exit 64: bad command line or JSON;
 * 70: a reply that does not decode. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <jansson.h>
#include "grpc/health/v1/health.pb-c.h"
#include "tokend/v1/tokend.pb-c.h"
#include "transcode.h"

#define EXIT_USAGE 64
#define EXIT_BADREPLY 70
#define MAX_HEADERS 32
#define CALL_INPUT_MAX (16 << 20)

static const char usage[] =
    "usage: tokend-call [--tls CA.pem] [--timeout MS] [--repeat N] [-H name:value]...\n"
    "                   HOST:PORT METHOD [JSON | -]\n"
    "  METHOD  Service/Method, e.g. tokend.v1.Tokend/TokenById or grpc.health.v1.Health/Check\n"
    "  JSON    the request (default {}); - reads it from stdin\n"
    "prints the reply as JSON; on another status prints \"grpc-status N: message\"\n"
    "on stderr and exits with N (64: usage, 70: undecodable reply)\n";

static const ProtobufCServiceDescriptor *const services[] = {
    &tokend__v1__tokend__descriptor,
    &grpc__health__v1__health__descriptor,
};

typedef struct {
    const char *ca_file;
    long timeout_ms;              /* 0: no deadline */
    long repeat;
    grpc_metadata headers[MAX_HEADERS];
    size_t nheaders;
    const char *target;
    const char *method;           /* as given */
    const char *json;
    size_t json_len;
} options;

/* One finished call: its status, details and reply bytes (if any). */
typedef struct {
    grpc_status_code status;
    char *details;
    grpc_byte_buffer *reply;
} outcome;

static void die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "tokend-call: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage);
    exit(EXIT_USAGE);
}

static long number(const char *name, const char *v, long min, long max)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || end == v || n < min || n > max)
        die_usage("%s wants a whole number in range", name);
    return n;
}

static char *read_file(FILE *f, const char *what, size_t *len)
{
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *more = cap < CALL_INPUT_MAX ? realloc(buf, cap * 2 + 1) : NULL;
            if (!more) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = more;
            cap *= 2;
        }
    }
    if (!buf || ferror(f)) {
        fprintf(stderr, "tokend-call: cannot read %s\n", what);
        exit(EXIT_USAGE);
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* "name:value" -> metadata; gRPC wants lower-case names, so they are folded. */
static void add_header(options *o, const char *arg)
{
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg)
        die_usage("-H wants name:value, got \"%s\"", arg);
    if (o->nheaders == MAX_HEADERS)
        die_usage("too many -H options (%s)", "at most 32");
    const char *value = colon + 1;
    while (*value == ' ')
        value++;
    grpc_slice key = grpc_slice_from_copied_buffer(arg, (size_t)(colon - arg));
    for (size_t i = 0; i < GRPC_SLICE_LENGTH(key); i++)  /* HTTP names ignore case */
        if (GRPC_SLICE_START_PTR(key)[i] >= 'A' && GRPC_SLICE_START_PTR(key)[i] <= 'Z')
            GRPC_SLICE_START_PTR(key)[i] += 'a' - 'A';
    grpc_slice val = grpc_slice_from_copied_string(value);
    if (!grpc_header_key_is_legal(key))
        die_usage("-H %s: metadata names are lower-case letters, digits, '-', '_' and '.'", arg);
    if (!grpc_header_nonbin_value_is_legal(val))
        die_usage("-H %s: the value must be printable ASCII", arg);
    o->headers[o->nheaders].key = key;
    o->headers[o->nheaders].value = val;
    o->nheaders++;
}

static void parse_args(options *o, int argc, char **argv)
{
    const char *pos[3];
    int npos = 0;
    o->repeat = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            exit(0);
        } else if (strcmp(a, "--tls") == 0 && has_value) {
            o->ca_file = argv[++i];
        } else if (strcmp(a, "--timeout") == 0 && has_value) {
            o->timeout_ms = number("--timeout", argv[++i], 1, 86400000L);
        } else if (strcmp(a, "--repeat") == 0 && has_value) {
            o->repeat = number("--repeat", argv[++i], 1, 100000000L);
        } else if (strcmp(a, "-H") == 0 && has_value) {
            add_header(o, argv[++i]);
        } else if (a[0] == '-' && a[1] != '\0') {
            die_usage("unknown option or missing value: %s", a);
        } else if (npos < 3) {
            pos[npos++] = a;
        } else {
            die_usage("unexpected argument %s", a);
        }
    }
    if (npos < 2)
        die_usage("%s", "HOST:PORT and METHOD are required");
    o->target = pos[0];
    o->method = pos[1];
    o->json = npos == 3 ? pos[2] : "{}";
    o->json_len = strlen(o->json);
    if (npos == 3 && strcmp(pos[2], "-") == 0)
        o->json = read_file(stdin, "the request from stdin", &o->json_len);
}

/* Finds Service/Method among the compiled-in services; fills the path. */
static const ProtobufCMethodDescriptor *find_method(const char *given, char *path, size_t len)
{
    const char *name = given[0] == '/' ? given + 1 : given;
    const char *slash = strrchr(name, '/');
    if (!slash)
        return NULL;
    size_t svc_len = (size_t)(slash - name);
    for (size_t i = 0; i < sizeof services / sizeof services[0]; i++) {
        const ProtobufCServiceDescriptor *s = services[i];
        if (strlen(s->name) != svc_len || strncmp(s->name, name, svc_len) != 0)
            continue;
        const ProtobufCMethodDescriptor *m =
            protobuf_c_service_descriptor_get_method_by_name(s, slash + 1);
        if (m)
            snprintf(path, len, "/%s/%s", s->name, m->name);
        return m;
    }
    return NULL;
}

static void list_methods(void)
{
    fprintf(stderr, "methods:\n");
    for (size_t i = 0; i < sizeof services / sizeof services[0]; i++)
        for (unsigned j = 0; j < services[i]->n_methods; j++)
            fprintf(stderr, "  %s/%s\n", services[i]->name, services[i]->methods[j].name);
}

static grpc_channel *open_channel(const options *o)
{
    grpc_channel_credentials *creds;
    if (o->ca_file) {
        FILE *f = fopen(o->ca_file, "rb");
        size_t len;
        if (!f) {
            fprintf(stderr, "tokend-call: cannot open %s: %s\n", o->ca_file, strerror(errno));
            exit(EXIT_USAGE);
        }
        char *pem = read_file(f, o->ca_file, &len);
        fclose(f);
        creds = grpc_ssl_credentials_create(pem, NULL, NULL, NULL);
        free(pem);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    grpc_channel *ch = grpc_channel_create(o->target, creds, NULL);
    grpc_channel_credentials_release(creds);
    return ch;
}

/* The classic unary batch: send metadata, message and half-close, receive
 * metadata, message and status, all in one batch on the queue. */
static outcome call_once(grpc_channel *ch, grpc_completion_queue *cq, const options *o,
                         grpc_slice path, grpc_slice request)
{
    outcome out = {GRPC_STATUS_UNKNOWN, NULL, NULL};
    gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_REALTIME);
    if (o->timeout_ms)
        deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                gpr_time_from_millis(o->timeout_ms, GPR_TIMESPAN));
    grpc_call *c = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path, NULL,
                                            deadline, NULL);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&request, 1);
    grpc_metadata_array initial, trailing;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];

    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = o->nheaders;
    ops[0].data.send_initial_metadata.metadata = (grpc_metadata *)o->headers;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &out.reply;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &out.status;
    ops[5].data.recv_status_on_client.status_details = &details;

    grpc_call_error rc = grpc_call_start_batch(c, ops, 6, c, NULL);
    if (rc == GRPC_CALL_OK) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
            out.status = GRPC_STATUS_INTERNAL;
            out.details = strdup("the call's batch did not complete");
        } else {
            out.details = grpc_slice_to_c_string(details);
        }
    } else {
        out.status = GRPC_STATUS_INTERNAL;
        out.details = strdup("grpc_call_start_batch failed");
    }
    grpc_slice_unref(details);
    grpc_byte_buffer_destroy(send);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(c);
    return out;
}

/* The reply message as JSON text (malloc'd), or NULL. */
static char *reply_json(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *reply)
{
    grpc_byte_buffer_reader rd;
    ProtobufCMessage *msg = NULL;
    char *env = NULL, *text = NULL;
    size_t env_len = 0;
    json_t *root = NULL;

    if (!reply || !grpc_byte_buffer_reader_init(&rd, reply))
        return NULL;
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (msg && transcode_envelope(200, NULL, msg, NULL, &env, &env_len) == 0 &&
        (root = json_loadb(env, env_len, 0, NULL)) != NULL)
        text = json_dumps(json_object_get(root, "data"), JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(root);
    free(env);
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return text;
}

int main(int argc, char **argv)
{
    options o = {0};
    char path[256], err[TRANSCODE_ERRLEN];
    ProtobufCMessage *req = NULL;
    int rc = 0;

    parse_args(&o, argc, argv);
    const ProtobufCMethodDescriptor *m = find_method(o.method, path, sizeof path);
    if (!m) {
        fprintf(stderr, "tokend-call: unknown method %s\n", o.method);
        list_methods();
        return EXIT_USAGE;
    }
    if (transcode_from_json(m->input, o.json, o.json_len, &req, err) != 0) {
        fprintf(stderr, "tokend-call: %s: %s\n", m->input->name, err);
        return EXIT_USAGE;
    }
    size_t len = protobuf_c_message_get_packed_size(req);
    grpc_slice request = grpc_slice_malloc(len);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(request));
    protobuf_c_message_free_unpacked(req, NULL);

    grpc_init();
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_channel *ch = open_channel(&o);
    grpc_slice method = grpc_slice_from_copied_string(path);

    for (long i = 0; i < o.repeat; i++) {
        outcome out = call_once(ch, cq, &o, method, request);
        int last = i + 1 == o.repeat;
        if (out.status != GRPC_STATUS_OK) {
            if (o.repeat > 1)
                fprintf(stderr, "call %ld of %ld: ", i + 1, o.repeat);
            fprintf(stderr, "grpc-status %d: %s\n", (int)out.status, out.details ? out.details : "");
            rc = (int)out.status;
        } else if (!out.reply) {
            fprintf(stderr, "tokend-call: status OK but no reply message\n");
            rc = EXIT_BADREPLY;
        } else if (last) {
            char *text = reply_json(m->output, out.reply);
            if (text)
                printf("%s\n", text);
            else
                fprintf(stderr, "tokend-call: the reply is not a valid %s\n", m->output->name);
            rc = text ? 0 : EXIT_BADREPLY;
            free(text);
        }
        free(out.details);
        grpc_byte_buffer_destroy(out.reply);
        if (rc != 0)
            break;
    }

    grpc_slice_unref(method);
    grpc_slice_unref(request);
    for (size_t i = 0; i < o.nheaders; i++) {
        grpc_slice_unref(o.headers[i].key);
        grpc_slice_unref(o.headers[i].value);
    }
    grpc_channel_destroy(ch);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    return rc;
}
