/* test_proxies.c - src/proxies.c: the --trusted-proxies list (networks,
 * hosts, IPv6, its refusals) and the client of a request: the right-most
 * X-Forwarded-For entry that is not a trusted proxy, never one a client
 * could have written, and the peer itself when it is not trusted. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "proxies.h"

static proxies P;

static void trust(const char *list)
{
    char why[160] = "";
    if (proxies_parse(&P, list, why, sizeof why) != 0)
        fail_msg("%s: %s", list, why);
}

static struct sockaddr_storage sa_of(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1)
        v4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1)
        v6->sin6_family = AF_INET6;
    else
        fail_msg("not an address: %s", text);
    return ss;
}

static int trusts(const char *addr)
{
    struct sockaddr_storage ss = sa_of(addr);
    return proxies_trusts(&P, (struct sockaddr *)&ss);
}

/* The client of a request from peer with these X-Forwarded-For headers
 * (NULL-ended); "" when the peer stands. */
static const char *client(const char *peer, ...)
{
    static char out[PROXIES_TEXT_MAX];
    const char *values[8];
    size_t lens[8], n = 0;
    va_list ap;
    va_start(ap, peer);
    for (const char *v; n < 8 && (v = va_arg(ap, const char *)) != NULL; n++)
        values[n] = v, lens[n] = strlen(v);
    va_end(ap);
    struct sockaddr_storage ss = sa_of(peer);
    size_t len = proxies_client(&P, (struct sockaddr *)&ss, values, lens, n, out);
    assert_int_equal(len, strlen(out));
    return out;
}

static void test_parse(void **state)
{
    (void)state;
    trust("10.0.0.0/8, 192.0.2.7 ,fd00::/8,::1,172.16.0.0/12,0.0.0.0/0");
    assert_int_equal(P.n, 6);
    assert_int_equal(P.nets[0].bits, 8);
    assert_int_equal(P.nets[1].bits, 32);
    assert_int_equal(P.nets[3].bits, 128);
    trust("10.1.2.3/8");   /* host bits dropped */
    assert_true(trusts("10.200.0.1"));
    const char *bad[] = {"", ",", "10.0.0.0/8,", "10.0.0.0/33", "fd00::/129", "10.0.0.0/", "10.0.0.0/x",
                         "10.0.0.0/8x", "10.0.0.0/-1", "host.example", "010.0.0.1", "1.2.3", "1.2.3.4.5",
                         "[::1", "10.0.0.0/99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[160] = "";
        assert_int_equal(proxies_parse(&P, bad[i], why, sizeof why), -1);
        assert_true(strlen(why) > 10);
    }
    char many[40 * 12] = "";
    for (int i = 0; i <= PROXIES_MAX; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s10.0.0.%d", i ? "," : "", i);
    char why[160] = "";
    assert_int_equal(proxies_parse(&P, many, why, sizeof why), -1);
    assert_non_null(strstr(why, "at most"));
}

static void test_trusts(void **state)
{
    (void)state;
    trust("10.0.0.0/8,192.0.2.7,fd00::/8,198.51.100.0/25");
    assert_true(trusts("10.0.0.1"));
    assert_true(trusts("10.255.255.255"));
    assert_false(trusts("11.0.0.1"));
    assert_true(trusts("192.0.2.7"));
    assert_false(trusts("192.0.2.8"));
    assert_true(trusts("198.51.100.127"));
    assert_false(trusts("198.51.100.128"));   /* /25: one bit past the byte */
    assert_true(trusts("fd12::1"));
    assert_false(trusts("fe80::1"));
    assert_true(trusts("::ffff:10.1.1.1"));   /* IPv4-mapped: the IPv4 address */
    assert_false(trusts("::ffff:11.1.1.1"));
    P.n = 0;
    assert_false(trusts("10.0.0.1"));
}

static void test_client(void **state)
{
    (void)state;
    trust("10.0.0.0/8,fd00::/8");
    /* an untrusted peer: its header is the client's own words */
    assert_string_equal(client("203.0.113.9", "198.51.100.1", NULL), "");
    /* a trusted peer: the right-most entry not trusted */
    assert_string_equal(client("10.0.0.2", "198.51.100.1", NULL), "198.51.100.1");
    assert_string_equal(client("10.0.0.2", " 6.6.6.6 , 198.51.100.1 ,10.0.0.3", NULL), "198.51.100.1");
    /* what the client wrote left of it is not read, garbage or not */
    assert_string_equal(client("10.0.0.2", "garbage, 1.1.1.1", "198.51.100.1", NULL), "198.51.100.1");
    /* several headers are one list, the last header the right-most */
    assert_string_equal(client("10.0.0.2", "198.51.100.1", "10.9.9.9", NULL), "198.51.100.1");
    assert_string_equal(client("10.0.0.2", "6.6.6.6", "198.51.100.1,10.9.9.9", NULL), "198.51.100.1");
    /* all trusted: the left-most */
    assert_string_equal(client("10.0.0.2", "10.1.1.1, 10.2.2.2", NULL), "10.1.1.1");
    /* no address where the client should be: the nearest trusted proxy */
    assert_string_equal(client("10.0.0.2", "10.3.3.3, bogus", NULL), "");
    assert_string_equal(client("10.0.0.2", "6.6.6.6, bogus, 10.3.3.3", NULL), "10.3.3.3");
    assert_string_equal(client("10.0.0.2", "", NULL), "");
    assert_string_equal(client("10.0.0.2", "198.51.100.1,", NULL), "");
    assert_string_equal(client("10.0.0.2", "198.51.100.1:443", NULL), "");
    assert_string_equal(client("10.0.0.2", NULL), "");
    /* IPv6, bracketed or not, written canonically; mapped IPv4 as IPv4 */
    assert_string_equal(client("fd00::5", "[2001:DB8:0:0::1]", NULL), "2001:db8::1");
    assert_string_equal(client("10.0.0.2", "2001:db8::1", NULL), "2001:db8::1");
    assert_string_equal(client("::ffff:10.0.0.2", "::ffff:198.51.100.1", NULL), "198.51.100.1");
    /* nothing trusted: never read */
    P.n = 0;
    assert_string_equal(client("10.0.0.2", "198.51.100.1", NULL), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_trusts),
        cmocka_unit_test(test_client),
    };
    return cmocka_run_group_tests_name("proxies", tests, NULL, NULL);
}
