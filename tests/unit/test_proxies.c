/* test_proxies.c - src/proxies.c: the --trusted-proxies list (networks,
 * hosts, IPv6, its refusals) and the client of a request: the right-most
 * X-Forwarded-For entry that is not a trusted proxy, never one a client
 * could have written, and the peer itself when it is not trusted; and the
 * PROXY headers of L4 balancers, v1 and v2, whole, cut short and malformed. */
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


/* The header's length, the client it names as text ("" for none), and that
 * every shorter prefix of a good header asks for more bytes. */
static int header(const void *buf, size_t len, char text[PROXIES_TEXT_MAX], unsigned *port)
{
    struct sockaddr_storage peer;
    socklen_t peerlen = 12345;
    int n = proxies_header(buf, len, &peer, &peerlen);
    text[0] = '\0';
    *port = 0;
    if (n > 0 && peerlen) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)&peer;
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&peer;
        if (peer.ss_family == AF_INET) {
            assert_int_equal(peerlen, sizeof *v4);
            inet_ntop(AF_INET, &v4->sin_addr, text, PROXIES_TEXT_MAX);
            *port = ntohs(v4->sin_port);
        } else {
            assert_int_equal(peer.ss_family, AF_INET6);
            assert_int_equal(peerlen, sizeof *v6);
            inet_ntop(AF_INET6, &v6->sin6_addr, text, PROXIES_TEXT_MAX);
            *port = ntohs(v6->sin6_port);
        }
    } else {
        assert_int_equal(peerlen, 0);
    }
    if (n > 0)
        for (size_t cut = 0; cut < (size_t)n; cut++)
            assert_int_equal(proxies_header(buf, cut, &peer, &peerlen), 0);
    return n;
}

/* --forwarded-header forwarded: the for= of each Forwarded element
 * (RFC 7239), in the same right-to-left walk. */
static void test_client_forwarded(void **state)
{
    (void)state;
    trust("10.0.0.0/8,fd00::/8");
    P.rfc7239 = 1;
    assert_string_equal(client("10.0.0.2", "for=198.51.100.1", NULL), "198.51.100.1");
    /* the name in any case, other pairs around it, spaces around the commas */
    assert_string_equal(client("10.0.0.2", "proto=https;For=198.51.100.1;by=10.0.0.2", NULL),
                        "198.51.100.1");
    assert_string_equal(client("10.0.0.2", "for=6.6.6.6 , for=198.51.100.1;proto=http, for=10.0.0.3",
                               NULL), "198.51.100.1");
    /* quoted, with a port, IPv6 in brackets */
    assert_string_equal(client("10.0.0.2", "for=\"198.51.100.1:4711\"", NULL), "198.51.100.1");
    assert_string_equal(client("10.0.0.2", "for=\"[2001:DB8:CAFE::17]:4711\"", NULL), "2001:db8:cafe::17");
    assert_string_equal(client("fd00::1", "for=\"[2001:db8::2]\"", NULL), "2001:db8::2");
    /* every comma separates, quoted or not: a quote the client leaves open
     * (or escapes a comma with) does not swallow what the proxy appends */
    assert_string_equal(client("10.0.0.2", "for=1.2.3.4;a=\"x, for=203.0.113.9", NULL), "203.0.113.9");
    assert_string_equal(client("10.0.0.2", "for=1.2.3.4;a=b\"c, for=203.0.113.9", NULL), "203.0.113.9");
    assert_string_equal(client("10.0.0.2", "for=1.2.3.4;a=\"x\\, for=203.0.113.9", NULL), "203.0.113.9");
    assert_string_equal(client("10.0.0.2", "for=\", for=203.0.113.9", NULL), "203.0.113.9");
    /* so a proxy's quoted comma leaves an element that is no address */
    assert_string_equal(client("10.0.0.2", "for=198.51.100.1;ext=\"a,b\"", NULL), "");
    /* several headers are one list */
    assert_string_equal(client("10.0.0.2", "for=6.6.6.6", "for=198.51.100.1", "for=10.9.9.9", NULL),
                        "198.51.100.1");
    /* unknown, obfuscated, or no for=: the nearest trusted proxy */
    assert_string_equal(client("10.0.0.2", "for=unknown", NULL), "");
    assert_string_equal(client("10.0.0.2", "for=6.6.6.6, for=_hidden, for=10.3.3.3", NULL), "10.3.3.3");
    assert_string_equal(client("10.0.0.2", "for=6.6.6.6, by=10.0.0.9", NULL), "");
    assert_string_equal(client("10.0.0.2", "for=\"198.51.100.1", NULL), "198.51.100.1");
    assert_string_equal(client("10.0.0.2", "for=", NULL), "");
    /* X-Forwarded-For's plain list is not a Forwarded header */
    assert_string_equal(client("10.0.0.2", "198.51.100.1", NULL), "");
    /* past PROXIES_ENTRIES_MAX entries, the left-most of the right-most ones */
    char many[PROXIES_ENTRIES_MAX * 16 + 32];
    size_t n = (size_t)snprintf(many, sizeof many, "for=6.6.6.6");
    for (int k = 0; k < PROXIES_ENTRIES_MAX; k++)
        n += (size_t)snprintf(many + n, sizeof many - n, ",for=10.0.0.%d", k % 250 + 1);
    assert_string_equal(client("10.0.0.2", many, NULL), "10.0.0.1");
    P.rfc7239 = 0;
    assert_string_equal(client("10.0.0.2", "for=198.51.100.1", NULL), "");
}

static void test_header_v1(void **state)
{
    (void)state;
    char t[PROXIES_TEXT_MAX];
    unsigned port;
    const char *a = "PROXY TCP4 198.51.100.7 10.0.0.1 40001 443\r\nGET / HTTP/1.1\r\n";
    assert_int_equal(header(a, strlen(a), t, &port), 44);
    assert_string_equal(t, "198.51.100.7");
    assert_int_equal(port, 40001);
    const char *b = "PROXY TCP6 2001:db8::5 2001:db8::1 65535 443\r\n";
    assert_int_equal(header(b, strlen(b), t, &port), (int)strlen(b));
    assert_string_equal(t, "2001:db8::5");
    assert_int_equal(port, 65535);
    const char *c = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nx";
    assert_int_equal(header(c, strlen(c), t, &port), (int)strlen(c) - 1);
    assert_string_equal(t, "");
    assert_int_equal(header("PROXY UNKNOWN\r\n", 15, t, &port), 15);

    static const char *const bad[] = {
        "PROXY TCP4 198.51.100.7 10.0.0.1 40001\r\n",           /* a port missing */
        "PROXY TCP4 198.51.100.7 10.0.0.1 40001 443 9\r\n",     /* a field too many */
        "PROXY TCP4 198.51.100.7  10.0.0.1 40001 443\r\n",      /* two spaces */
        "PROXY TCP4 2001:db8::5 10.0.0.1 40001 443\r\n",        /* not the family named */
        "PROXY TCP6 198.51.100.7 2001:db8::1 1 2\r\n",
        "PROXY TCP4 198.51.100.7 10.0.0.1 65536 443\r\n",       /* no such port */
        "PROXY TCP4 198.51.100.7 10.0.0.1 4x 443\r\n",
        "PROXY TCP4 198.51.100.7 10.0.0.1 40001 443\n",         /* LF alone */
        "PROXY TCP4 198.51.100.7 10.0.0.1 40001 443\rX",
        "PROXY UDP4 198.51.100.7 10.0.0.1 40001 443\r\n",
        "PROXY \r\n",
        "GET / HTTP/1.1\r\n",                                   /* no header: HTTP */
        "POST /token/user HTTP/1.1\r\n",
        "\x16\x03\x01\x02\x00\x01",                            /* a TLS ClientHello */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(header(bad[i], strlen(bad[i]), t, &port), -1);
    /* the protocol's bound: 107 bytes, CRLF included */
    char line[200] = "PROXY UNKNOWN ";
    memset(line + 14, 'x', sizeof line - 14);
    memcpy(line + 105, "\r\n", 2);
    assert_int_equal(header(line, sizeof line, t, &port), 107);
    memcpy(line + 105, "x\r\n", 3);
    assert_int_equal(header(line, sizeof line, t, &port), -1);
    assert_int_equal(header(line, 106, t, &port), 0);    /* may still end in time */
    assert_int_equal(header(line, 107, t, &port), -1);
    /* prefixes of the signature wait; anything else is not a header */
    assert_int_equal(header("PROX", 4, t, &port), 0);
    assert_int_equal(header("PROXZ", 5, t, &port), -1);
    assert_int_equal(header("", 0, t, &port), 0);
}

/* A v2 header: signature, version and command, family, length, body. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t family, const void *body, size_t len)
{
    memcpy(out, "\r\n\r\n\0\r\nQUIT\n", 12);
    out[12] = ver_cmd, out[13] = family, out[14] = (uint8_t)(len >> 8), out[15] = (uint8_t)len;
    memcpy(out + 16, body, len);
    return 16 + len;
}

static void test_header_v2(void **state)
{
    (void)state;
    char t[PROXIES_TEXT_MAX];
    unsigned port;
    static uint8_t buf[PROXIES_V2_MAX + 64];
    /* IPv4: 198.51.100.7:40001 -> 10.0.0.1:443, then a TLV (AWS's VPC endpoint) */
    const uint8_t in4[] = {198, 51, 100, 7, 10, 0, 0, 1, 0x9c, 0x41, 0x01, 0xbb,
                           0xea, 0x00, 0x05, 0x01, 'v', 'p', 'c', 'e'};
    size_t n = v2(buf, 0x21, 0x11, in4, sizeof in4);
    memcpy(buf + n, "GET", 3);
    assert_int_equal(header(buf, n + 3, t, &port), (int)n);
    assert_string_equal(t, "198.51.100.7");
    assert_int_equal(port, 40001);
    uint8_t in6[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 5, [16] = 0x20, 0x01, 0x0d, 0xb8, [31] = 1,
                       [32] = 0xff, 0xff, 0x01, 0xbb};
    n = v2(buf, 0x21, 0x21, in6, sizeof in6);
    assert_int_equal(header(buf, n, t, &port), 52);
    assert_string_equal(t, "2001:db8::5");
    assert_int_equal(port, 65535);
    /* LOCAL (the balancer's own health check), UNSPEC, UDP, a Unix socket:
     * taken whole, naming no client */
    assert_int_equal(header(buf, v2(buf, 0x20, 0x00, "", 0), t, &port), 16);
    assert_int_equal(header(buf, v2(buf, 0x20, 0x11, in4, 12), t, &port), 28);
    assert_string_equal(t, "");
    assert_int_equal(header(buf, v2(buf, 0x21, 0x00, "", 0), t, &port), 16);
    assert_int_equal(header(buf, v2(buf, 0x21, 0x12, in4, 12), t, &port), 28);
    static const uint8_t unix_body[216] = {'/'};
    assert_int_equal(header(buf, v2(buf, 0x21, 0x31, unix_body, sizeof unix_body), t, &port), 232);
    assert_string_equal(t, "");
    /* malformed: another version or command, addresses cut short, too long */
    assert_int_equal(header(buf, v2(buf, 0x11, 0x11, in4, 12), t, &port), -1);
    assert_int_equal(header(buf, v2(buf, 0x22, 0x11, in4, 12), t, &port), -1);
    assert_int_equal(header(buf, v2(buf, 0x21, 0x11, in4, 11), t, &port), -1);
    assert_int_equal(header(buf, v2(buf, 0x21, 0x21, in6, 35), t, &port), -1);
    static const uint8_t big[PROXIES_V2_MAX];
    assert_int_equal(header(buf, v2(buf, 0x21, 0x11, big, PROXIES_V2_MAX - 16), t, &port), PROXIES_V2_MAX);
    assert_int_equal(header(buf, v2(buf, 0x21, 0x11, big, PROXIES_V2_MAX - 15), t, &port), -1);
    /* a length promising more than has come: wait */
    n = v2(buf, 0x21, 0x11, in4, sizeof in4);
    assert_int_equal(header(buf, n - 1, t, &port), 0);
    assert_int_equal(header("\r\n\r\n\0\r\nQUIT", 11, t, &port), 0);
    assert_int_equal(header("\r\n\r\n\0\r\nQUIX\n", 12, t, &port), -1);
    assert_int_equal(header("\r\n\r\nGET", 7, t, &port), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_trusts),
        cmocka_unit_test(test_client),
        cmocka_unit_test(test_client_forwarded),
        cmocka_unit_test(test_header_v1),
        cmocka_unit_test(test_header_v2),
    };
    return cmocka_run_group_tests_name("proxies", tests, NULL, NULL);
}
