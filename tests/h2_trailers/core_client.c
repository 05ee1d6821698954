/* core_client.c - the gRPC C core client against echo_server.
 *
 *   core_client HOST:PORT [--tls CERT]
 *
 * Raw byte messages (no protobuf). Exits non-zero on the first failed check.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#define UNAUTH_DETAILS "token expired: caf\xc3\xa9 \xe2\x98\x95 100% sure"

static grpc_channel *ch;
static grpc_completion_queue *cq;

struct result {
    int ok; /* batch completed */
    grpc_status_code status;
    char *details;
    char *msg;
    size_t msg_len;
    int have_msg;
};

static struct result call(const char *method, const char *req, size_t req_len)
{
    struct result r = {0};
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(10, GPR_TIMESPAN));
    grpc_slice m = grpc_slice_from_static_string(method);
    grpc_call *c = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, deadline, NULL);
    grpc_slice req_slice = grpc_slice_from_copied_buffer(req, req_len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&req_slice, 1), *recv = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_slice details;

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &r.status;
    ops[5].data.recv_status_on_client.status_details = &details;

    if (grpc_call_start_batch(c, ops, 6, (void *)1, NULL) == GRPC_CALL_OK) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        r.ok = ev.type == GRPC_OP_COMPLETE && ev.success;
    }
    if (r.ok) {
        r.details = grpc_slice_to_c_string(details);
        grpc_slice_unref(details);
        if (recv != NULL) {
            grpc_byte_buffer_reader rd;
            grpc_byte_buffer_reader_init(&rd, recv);
            grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
            r.msg_len = GRPC_SLICE_LENGTH(all);
            r.msg = malloc(r.msg_len + 1);
            memcpy(r.msg, GRPC_SLICE_START_PTR(all), r.msg_len);
            r.have_msg = 1;
            grpc_slice_unref(all);
            grpc_byte_buffer_reader_destroy(&rd);
            grpc_byte_buffer_destroy(recv);
        }
    }
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(req_slice);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(c);
    return r;
}

static void done(struct result *r)
{
    free(r->details);
    free(r->msg);
}

#define CHECK(cond, ...)                                                                                                           \
    do {                                                                                                                           \
        if (!(cond)) {                                                                                                             \
            printf("FAIL: " __VA_ARGS__);                                                                                         \
            printf("\n");                                                                                                          \
            exit(1);                                                                                                               \
        }                                                                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 2 && !(argc == 4 && strcmp(argv[2], "--tls") == 0)) {
        fprintf(stderr, "usage: %s HOST:PORT [--tls CERT]\n", argv[0]);
        return 2;
    }
    grpc_init();
    cq = grpc_completion_queue_create_for_next(NULL);
    const char *mode = "h2c";
    if (argc == 4) {
        FILE *f = fopen(argv[3], "rb");
        CHECK(f != NULL, "cannot open %s", argv[3]);
        static char pem[65536];
        pem[fread(pem, 1, sizeof(pem) - 1, f)] = '\0';
        fclose(f);
        grpc_arg arg = {.type = GRPC_ARG_STRING, .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, .value.string = "localhost"};
        grpc_channel_args args = {1, &arg};
        grpc_channel_credentials *creds = grpc_ssl_credentials_create(pem, NULL, NULL, NULL);
        ch = grpc_channel_create(argv[1], creds, &args);
        grpc_channel_credentials_release(creds);
        mode = "TLS";
    } else {
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        ch = grpc_channel_create(argv[1], creds, NULL);
        grpc_channel_credentials_release(creds);
    }

    struct result r = call("/echo.Echo/Echo", "hello\0core", 10);
    CHECK(r.ok && r.status == GRPC_STATUS_OK && r.have_msg && r.msg_len == 10 && memcmp(r.msg, "hello\0core", 10) == 0,
          "echo: ok=%d status=%d details=%s", r.ok, r.status, r.details);
    done(&r);
    printf("ok  echo (%s)\n", mode);

    r = call("/echo.Echo/Unauth", "", 0);
    CHECK(r.ok && r.status == GRPC_STATUS_UNAUTHENTICATED && strcmp(r.details, UNAUTH_DETAILS) == 0 && !r.have_msg,
          "unauth: ok=%d status=%d details=%s", r.ok, r.status, r.details);
    printf("ok  UNAUTHENTICATED, details \"%s\"\n", r.details);
    done(&r);

    r = call("/echo.Echo/FailAfterMsg", "m", 1);
    CHECK(r.ok && r.status == GRPC_STATUS_FAILED_PRECONDITION && strcmp(r.details, "failed after a message") == 0,
          "fail-after-msg: ok=%d status=%d details=%s", r.ok, r.status, r.details);
    done(&r);
    printf("ok  FAILED_PRECONDITION after a message\n");

    r = call("/echo.Echo/Big", "", 0);
    CHECK(r.ok && r.status == GRPC_STATUS_OK && r.have_msg && r.msg_len == 200000, "big: ok=%d status=%d len=%zu", r.ok,
          r.status, r.msg_len);
    for (size_t i = 0; i != r.msg_len; ++i)
        CHECK((unsigned char)r.msg[i] == i * 7 % 251, "big: byte %zu", i);
    done(&r);
    printf("ok  200000-byte message\n");

    for (int i = 0; i != 1000; ++i) {
        char req[64];
        int n = snprintf(req, sizeof(req), "call %d", i);
        r = call("/echo.Echo/Echo", req, (size_t)n);
        CHECK(r.ok && r.status == GRPC_STATUS_OK && r.msg_len == (size_t)n && memcmp(r.msg, req, (size_t)n) == 0,
              "sequential %d: status=%d", i, r.status);
        done(&r);
    }
    printf("ok  1000 sequential calls\n");

    r = call("/inline-grpc-error", "x", 1);
    printf("info: h2o_send_inline error (HEADERS + empty DATA/END_STREAM) -> C core: status %d \"%s\"\n", r.status,
           r.details ? r.details : "");
    done(&r);

    grpc_channel_destroy(ch);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    printf("PASS core_client (%s)\n", mode);
    return 0;
}
