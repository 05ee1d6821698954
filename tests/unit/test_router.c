/* test_router.c - the routes read from the embedded descriptor set: every
 * RPC by its gRPC path, HTTP verb + path lookups (additional bindings,
 * 404 and 405 cases, the Allow list), and query parameters bound to the
 * request message a route names. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "router.h"
#include "rpc.h"
#include "transcode.h"
#include "tokend/v1/tokend.pb-c.h"

static int setup(void **state)
{
    router *r = NULL;
    char err[256];
    if (router_create(&r, rpc_services(), tokend_protoset, tokend_protoset_len, err,
                      sizeof err) != 0) {
        fprintf(stderr, "router_create: %s\n", err);
        return -1;
    }
    *state = r;
    return 0;
}

static int teardown(void **state)
{
    router_free(*state);
    return 0;
}

static const router_http *find(const router *r, const char *verb, const char *path, int want)
{
    const router_http *h = NULL;
    int rc = router_http_find(r, verb, strlen(verb), path, strlen(path), &h);
    if (rc != want)
        print_error("%s %s: %d, want %d\n", verb, path, rc, want);
    assert_int_equal(rc, want);
    return rc == ROUTER_FOUND ? h : NULL;
}

static void test_every_rpc_has_its_grpc_path(void **state)
{
    const router *r = *state;
    for (ProtobufCService *const *s = rpc_services(); *s; s++) {
        const ProtobufCServiceDescriptor *d = (*s)->descriptor;
        for (unsigned i = 0; i < d->n_methods; i++) {
            char path[160];
            snprintf(path, sizeof path, "/%s/%s", d->name, d->methods[i].name);
            const router_rpc *rpc = router_grpc(r, path, strlen(path));
            if (!rpc)
                print_error("no route for %s\n", path);
            assert_non_null(rpc);
            assert_ptr_equal(rpc->service, *s);
            assert_int_equal(rpc->method_index, i);
            assert_ptr_equal(rpc->method, &d->methods[i]);
            assert_string_equal(rpc->grpc_path, path);
        }
    }
}

static void test_grpc_paths(void **state)
{
    const router *r = *state;
    const router_rpc *v = router_grpc(r, "/tokend.v1.Tokend/Verify", 24);
    assert_non_null(v);
    assert_string_equal(v->method->name, "Verify");
    assert_false(v->streaming);
    const char *watch = "/grpc.health.v1.Health/Watch";
    assert_true(router_grpc(r, watch, strlen(watch))->streaming);
    assert_null(router_grpc(r, "/tokend.v1.Tokend/Nope", 22));
    assert_null(router_grpc(r, "/tokend.v1.Tokend/Verif", 23));      /* a prefix is not a match */
    assert_null(router_grpc(r, "/tokend.v1.Tokend/VerifyX", 25));
    assert_null(router_grpc(r, "Verify", 6));                         /* shorter than the hash's word */
    assert_null(router_grpc(r, "", 0));
}

/* Every RPC is found by its gRPC path, and a path of a route's length (or
 * one shorter) that is not its path is not, nor a very long one. */
static void test_every_route_by_length(void **state)
{
    const router *r = *state;
    for (size_t i = 0; i < router_count(r); i++) {
        const router_rpc *rpc = router_at(r, i);
        char other[sizeof rpc->grpc_path];
        assert_ptr_equal(router_grpc(r, rpc->grpc_path, rpc->grpc_path_len), rpc);
        memcpy(other, rpc->grpc_path, rpc->grpc_path_len);
        other[rpc->grpc_path_len - 1] ^= 0x20;
        assert_null(router_grpc(r, other, rpc->grpc_path_len));
    }
    static const char *const verbs[] = {"GET", "POST", "PUT", "DELETE", "PATCH"};
    size_t found = 0;
    /* HTTP routes (the router lists no HTTP routes): some of each kind, and
     * paths of their lengths, or one shorter, that are not routes */
    const char *paths[] = {"/token/verify", "/user/list", "/user/device/remove"};
    for (size_t i = 0; i < 3; i++) {
        char p[64];
        size_t n = strlen(paths[i]);
        const router_http *h = NULL;
        int any = 0;
        for (size_t v = 0; v < 5; v++)
            if (router_http_find(r, verbs[v], strlen(verbs[v]), paths[i], n, &h) == ROUTER_FOUND) {
                assert_int_equal(h->path_len, n);
                assert_memory_equal(h->path, paths[i], n);
                any = 1, found++;
            }
        assert_true(any);
        memcpy(p, paths[i], n);
        p[n - 1] ^= 0x20;
        assert_int_equal(router_http_find(r, "POST", 4, p, n, &h), ROUTER_NO_PATH);
        assert_int_equal(router_http_find(r, "POST", 4, paths[i], n - 1, &h), ROUTER_NO_PATH);
    }
    assert_int_equal(found, 4);
    /* long paths */
    char longp[600];
    memset(longp, 'a', sizeof longp);
    longp[0] = '/';
    const router_http *h = NULL;
    for (size_t n = 250; n <= sizeof longp; n += 7)
        assert_int_equal(router_http_find(r, "GET", 3, longp, n, &h), ROUTER_NO_PATH);
    assert_null(router_grpc(r, longp, sizeof longp));
}

static void test_http_lookups(void **state)
{
    const router *r = *state;
    const router_http *h = find(r, "POST", "/token/verify", ROUTER_FOUND);
    assert_string_equal(h->rpc->method->name, "Verify");
    assert_true(h->body);
    assert_null(h->response_body);

    h = find(r, "GET", "/user/list", ROUTER_FOUND);
    assert_string_equal(h->rpc->method->name, "ListUsers");
    assert_false(h->body);
    assert_string_equal(h->response_body, "users");

    /* an additional binding reaches the same RPC */
    const router_http *post = find(r, "POST", "/user/device/remove", ROUTER_FOUND);
    const router_http *del = find(r, "DELETE", "/user/device/remove", ROUTER_FOUND);
    assert_ptr_equal(post->rpc, del->rpc);
    assert_string_equal(del->rpc->method->name, "RemoveDevice");
    assert_string_equal(del->response_body, "value");

    find(r, "GET", "/token/verify", ROUTER_NO_VERB);
    find(r, "post", "/token/verify", ROUTER_NO_VERB);           /* verbs are exact */
    find(r, "POS", "/token/verify", ROUTER_NO_VERB);
    find(r, "POSTPOST", "/token/verify", ROUTER_NO_VERB);       /* longer than any verb */
    const router_http *h0 = NULL;                               /* "POST" and a NUL */
    assert_int_equal(router_http_find(r, "POST", 5, "/token/verify", 13, &h0), ROUTER_NO_VERB);
    find(r, "POST", "/token/verify/", ROUTER_NO_PATH);
    find(r, "POST", "/no/such/path", ROUTER_NO_PATH);
    find(r, "POST", "/tokend.v1.Tokend/Verify", ROUTER_NO_PATH); /* gRPC paths are not HTTP routes */
}

static void test_allowed(void **state)
{
    const router *r = *state;
    char allow[64];
    router_allowed(r, "/token/verify", 13, allow, sizeof allow);
    assert_string_equal(allow, "POST");
    router_allowed(r, "/user/device/remove", 19, allow, sizeof allow);
    assert_string_equal(allow, "POST, DELETE");
    router_allowed(r, "/nope", 5, allow, sizeof allow);
    assert_string_equal(allow, "");
}

/* The message a route's RPC takes, empty, as an HTTP call without a body starts. */
static ProtobufCMessage *request_of(const router_http *h)
{
    ProtobufCMessage *msg = NULL;
    char err[TRANSCODE_ERRLEN];
    assert_int_equal(transcode_from_json(h->rpc->method->input, NULL, 0, &msg, err), 0);
    return msg;
}

static void test_query_binding(void **state)
{
    const router *r = *state;
    char err[TRANSCODE_ERRLEN];
    char q1[] = "page_num=2&page_size=50&unknown=1";
    ProtobufCMessage *msg = request_of(find(r, "GET", "/user/list", ROUTER_FOUND));
    assert_int_equal(transcode_set_query(msg, q1, strlen(q1), err), 0);
    Tokend__V1__ListUsersRequest *lu = (Tokend__V1__ListUsersRequest *)msg;
    assert_int_equal(lu->page_num, 2);
    assert_int_equal(lu->page_size, 50);
    protobuf_c_message_free_unpacked(msg, NULL);

    /* the vendor's spelling of the parameter is the field's name */
    char q2[] = "deviceSn=%37";
    msg = request_of(find(r, "DELETE", "/user/token/unbind", ROUTER_FOUND));
    assert_int_equal(transcode_set_query(msg, q2, strlen(q2), err), 0);
    assert_int_equal(((Tokend__V1__UnbindDeviceTokenRequest *)msg)->devicesn, 7);
    protobuf_c_message_free_unpacked(msg, NULL);

    char q3[] = "device_sn=seven";
    msg = request_of(find(r, "POST", "/user/device/remove", ROUTER_FOUND));
    assert_int_equal(transcode_set_query(msg, q3, strlen(q3), err), -1);
    assert_non_null(strstr(err, "device_sn"));
    protobuf_c_message_free_unpacked(msg, NULL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_every_rpc_has_its_grpc_path),
        T(test_grpc_paths),
        T(test_every_route_by_length),
        T(test_http_lookups),
        T(test_allowed),
        T(test_query_binding),
    };
    return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}
