/* proxies.c - trusted proxies and the client they forward (see proxies.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proxies.h"

typedef struct {
    uint8_t family;
    uint8_t addr[16];
} address;

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* An IPv4-mapped IPv6 address is its IPv4 address: one client, one text. */
static void unmap(address *a)
{
    if (a->family == AF_INET6 && memcmp(a->addr, v4_mapped, 12) == 0) {
        memmove(a->addr, a->addr + 12, 4);
        a->family = AF_INET;
    }
}

/* An address (s, n bytes; IPv6 may be in brackets) as inet_pton reads it:
 * dotted decimal without leading zeros, or IPv6 text. 0, or -1. */
static int parse_address(const char *s, size_t n, address *a)
{
    char text[PROXIES_TEXT_MAX];
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']')
        s++, n -= 2;
    if (n == 0 || n >= sizeof text)
        return -1;
    memcpy(text, s, n);
    text[n] = '\0';
    memset(a, 0, sizeof *a);
    if (inet_pton(AF_INET, text, a->addr) == 1)
        a->family = AF_INET;
    else if (inet_pton(AF_INET6, text, a->addr) == 1)
        a->family = AF_INET6;
    else
        return -1;
    unmap(a);
    return 0;
}

static int in_net(const proxies_net *net, const address *a)
{
    if (net->family != a->family)
        return 0;
    unsigned whole = net->bits / 8, rest = net->bits % 8;
    if (memcmp(net->addr, a->addr, whole) != 0)
        return 0;
    return rest == 0 || ((net->addr[whole] ^ a->addr[whole]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static int trusted(const proxies *p, const address *a)
{
    for (size_t i = 0; i < p->n; i++)
        if (in_net(&p->nets[i], a))
            return 1;
    return 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

typedef struct {
    const char *s;
    size_t n;
} span;

static span trim(const char *s, size_t n)
{
    while (n && is_space(*s))
        s++, n--;
    while (n && is_space(s[n - 1]))
        n--;
    return (span){s, n};
}

int proxies_parse(proxies *p, const char *list, char *why, size_t whylen)
{
    if (!p || !list || !why || !whylen)
        return -1;
    p->n = 0;
    for (const char *s = list;;) {
        const char *end = strchr(s, ',');
        span item = trim(s, end ? (size_t)(end - s) : strlen(s));
        size_t n = item.n;
        s = item.s;
        const char *slash = memchr(s, '/', n);
        size_t alen = slash ? (size_t)(slash - s) : n;
        address a;
        char *bits_end = NULL;
        unsigned long bits = 0;
        if (n == 0 || parse_address(s, alen, &a) != 0) {
            snprintf(why, whylen, "\"%.*s\" is not an address or network (e.g. 10.0.0.0/8, fd00::/8, 192.0.2.7)",
                     (int)(n > 64 ? 64 : n), s);
            return -1;
        }
        if (slash) {
            bits = slash + 1 < s + n && slash[1] >= '0' && slash[1] <= '9'
                       ? strtoul(slash + 1, &bits_end, 10) : 999;
            if (bits == 999 || bits_end != s + n || bits > (a.family == AF_INET ? 32u : 128u)) {
                snprintf(why, whylen, "\"%.*s\": the prefix length must be 0 to %u",
                         (int)(n > 64 ? 64 : n), s, a.family == AF_INET ? 32u : 128u);
                return -1;
            }
        } else {
            bits = a.family == AF_INET ? 32 : 128;
        }
        if (p->n == PROXIES_MAX) {
            snprintf(why, whylen, "at most %d networks", PROXIES_MAX);
            return -1;
        }
        proxies_net *net = &p->nets[p->n++];
        memset(net, 0, sizeof *net);
        net->family = a.family;
        net->bits = (uint8_t)bits;
        for (unsigned i = 0; i < bits / 8; i++)
            net->addr[i] = a.addr[i];
        if (bits % 8)
            net->addr[bits / 8] = a.addr[bits / 8] & (uint8_t)(0xff << (8 - bits % 8));
        if (!end)
            return 0;
        s = end + 1;
    }
}

static int from_sockaddr(const struct sockaddr *sa, address *a)
{
    memset(a, 0, sizeof *a);
    if (!sa)
        return -1;
    if (sa->sa_family == AF_INET) {
        a->family = AF_INET;
        memcpy(a->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        a->family = AF_INET6;
        memcpy(a->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        unmap(a);
    } else {
        return -1;
    }
    return 0;
}

int proxies_trusts(const proxies *p, const struct sockaddr *sa)
{
    address a;
    return p && p->n && from_sockaddr(sa, &a) == 0 && trusted(p, &a);
}

/* The address in a Forwarded for= value (RFC 7239 6): "[v6]" or
 * "[v6]:port", v4 or "v4:port"; anything else ("unknown", "_hidden") is
 * left as it is, and is no address. */
static span node_address(span v)
{
    if (v.n && v.s[0] == '[') {
        const char *close = memchr(v.s, ']', v.n);
        return close ? (span){v.s, (size_t)(close - v.s) + 1} : v;
    }
    const char *colon = memchr(v.s, ':', v.n);
    if (colon && !memchr(colon + 1, ':', v.n - (size_t)(colon + 1 - v.s)))
        v.n = (size_t)(colon - v.s);
    return v;
}

/* The for= of one Forwarded element: pairs token=value separated by ';',
 * a value a token or a quoted string. {s, 0} when it has none. */
static span forwarded_for(span e)
{
    size_t i = 0;
    while (i < e.n) {
        size_t name = i;
        while (i < e.n && e.s[i] != '=' && e.s[i] != ';')
            i++;
        span key = trim(e.s + name, i - name);
        if (i == e.n || e.s[i] == ';') {
            i++;
            continue;
        }
        span v;
        for (i++; i < e.n && is_space(e.s[i]);)
            i++;
        if (i < e.n && e.s[i] == '"') {
            size_t start = ++i;
            while (i < e.n && e.s[i] != '"')
                i += e.s[i] == '\\' ? 2 : 1;
            v = (span){e.s + start, (i < e.n ? i : e.n) - start};
            while (i < e.n && e.s[i] != ';')
                i++;
        } else {
            size_t start = i;
            while (i < e.n && e.s[i] != ';')
                i++;
            v = trim(e.s + start, i - start);
        }
        i++;
        if (key.n == 3 && (key.s[0] | 0x20) == 'f' && (key.s[1] | 0x20) == 'o' && (key.s[2] | 0x20) == 'r')
            return node_address(v);
    }
    return (span){e.s, 0};
}

/* The entries of the header's values, left to right: X-Forwarded-For's
 * comma-separated items, or each Forwarded element's for=. Every comma
 * separates, inside quotes too: a quote the client left open must not
 * join the elements the proxies append to its own (a for= never holds a
 * comma; a proxy's quoted one makes its element no address, and the
 * proxy stands). The right-most PROXIES_ENTRIES_MAX, in a ring; returns
 * how many there were in all. */
static size_t entries(int rfc7239, const char *const values[], const size_t lens[], size_t nvalues,
                      span ring[PROXIES_ENTRIES_MAX])
{
    size_t count = 0;
    for (size_t v = 0; v < nvalues; v++) {
        const char *s = values[v];
        size_t n = lens[v], start = 0;
        for (size_t i = 0; i <= n; i++) {
            if (i < n && s[i] != ',')
                continue;
            span e = trim(s + start, i - start);
            ring[count++ % PROXIES_ENTRIES_MAX] = rfc7239 ? forwarded_for(e) : e;
            start = i + 1;
        }
    }
    return count;
}

size_t proxies_client(const proxies *p, const struct sockaddr *peer, const char *const values[],
                      const size_t lens[], size_t nvalues, char out[PROXIES_TEXT_MAX])
{
    span ring[PROXIES_ENTRIES_MAX];
    address client, a;
    int forwarded = 0;   /* client is an entry of the header, not the peer */
    out[0] = '\0';
    if (!p || !p->n || from_sockaddr(peer, &client) != 0 || !trusted(p, &client))
        return 0;
    size_t count = entries(p->rfc7239, values, lens, nvalues, ring);
    size_t kept = count < PROXIES_ENTRIES_MAX ? count : PROXIES_ENTRIES_MAX;
    /* Right to left: each trusted proxy vouches for the entry before it;
     * no address means the nearest trusted proxy is the client. */
    for (size_t k = 0; k < kept; k++) {
        span e = ring[(count - 1 - k) % PROXIES_ENTRIES_MAX];
        if (parse_address(e.s, e.n, &a) != 0)
            break;
        client = a, forwarded = 1;
        if (!trusted(p, &a))
            break;
    }
    if (!forwarded || !inet_ntop(client.family, client.addr, out, PROXIES_TEXT_MAX)) {
        out[0] = '\0';
        return 0;
    }
    return strlen(out);
}

static const uint8_t v1_sig[6] = "PROXY ";
static const uint8_t v2_sig[12] = "\r\n\r\n\0\r\nQUIT\n";

/* A port in a v1 line: 1 to 5 digits, at most 65535. */
static int parse_port(const char *s, size_t n, uint16_t *port)
{
    unsigned v = 0;
    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* An address of the family a v1 line names, into a (4 or 16 bytes). */
static int parse_family_address(int family, const char *s, size_t n, void *a)
{
    char text[PROXIES_TEXT_MAX];
    if (n == 0 || n >= sizeof text)
        return -1;
    memcpy(text, s, n);
    text[n] = '\0';
    return inet_pton(family, text, a) == 1 ? 0 : -1;
}

static void set_peer(int family, const uint8_t *addr, uint16_t port, struct sockaddr_storage *peer,
                     socklen_t *peerlen)
{
    memset(peer, 0, sizeof *peer);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)peer;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, addr, 4);
        in->sin_port = htons(port);
        *peerlen = sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)peer;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, addr, 16);
        in6->sin6_port = htons(port);
        *peerlen = sizeof *in6;
    }
}

/* "PROXY TCP4 SRC DST SPORT DPORT\r\n", TCP6 alike, or "PROXY UNKNOWN...\r\n". */
static int header_v1(const char *s, size_t len, struct sockaddr_storage *peer, socklen_t *peerlen)
{
    size_t n = len < PROXIES_V1_MAX ? len : PROXIES_V1_MAX, end = sizeof v1_sig;
    while (end < n && s[end] != '\r' && s[end] != '\n')
        end++;
    if (end == n)
        return n == PROXIES_V1_MAX ? -1 : 0;
    if (s[end] != '\r' || end + 1 == n)
        return s[end] != '\r' || n == PROXIES_V1_MAX ? -1 : 0;
    if (s[end + 1] != '\n')
        return -1;
    const char *field[5];
    size_t flen[5], nfields = 0, at = sizeof v1_sig;
    while (at <= end && nfields < 5) {
        size_t b = at;
        while (at < end && s[at] != ' ')
            at++;
        field[nfields] = s + b, flen[nfields++] = at - b;
        at++;   /* past the space, or past end */
    }
    if (nfields >= 1 && flen[0] == 7 && memcmp(field[0], "UNKNOWN", 7) == 0)
        return (int)(end + 2);   /* the rest of the line is not read */
    int family = nfields >= 1 && flen[0] == 4 && memcmp(field[0], "TCP4", 4) == 0   ? AF_INET
                 : nfields >= 1 && flen[0] == 4 && memcmp(field[0], "TCP6", 4) == 0 ? AF_INET6
                                                                                     : 0;
    uint8_t src[16], dst[16];
    uint16_t sport, dport;
    if (!family || nfields != 5 || at != end + 1 || parse_family_address(family, field[1], flen[1], src) ||
        parse_family_address(family, field[2], flen[2], dst) || parse_port(field[3], flen[3], &sport) ||
        parse_port(field[4], flen[4], &dport))
        return -1;
    set_peer(family, src, sport, peer, peerlen);
    return (int)(end + 2);
}

/* The signature, then version 2 and a command (LOCAL or PROXY), the family
 * and transport, the length of the rest (big-endian), the addresses, TLVs. */
static int header_v2(const uint8_t *b, size_t len, struct sockaddr_storage *peer, socklen_t *peerlen)
{
    if (len < 16)
        return 0;
    unsigned version = b[12] >> 4, command = b[12] & 0x0f, rest = (unsigned)b[14] << 8 | b[15];
    if (version != 2 || command > 1 || 16 + rest > PROXIES_V2_MAX)
        return -1;
    if (len < 16 + rest)
        return 0;
    if (command == 1 && b[13] == 0x11) {   /* PROXY, TCP over IPv4 */
        if (rest < 12)
            return -1;
        set_peer(AF_INET, b + 16, (uint16_t)(b[24] << 8 | b[25]), peer, peerlen);
    } else if (command == 1 && b[13] == 0x21) {   /* PROXY, TCP over IPv6 */
        if (rest < 36)
            return -1;
        set_peer(AF_INET6, b + 16, (uint16_t)(b[48] << 8 | b[49]), peer, peerlen);
    }
    return (int)(16 + rest);
}

int proxies_header(const uint8_t *buf, size_t len, struct sockaddr_storage *peer, socklen_t *peerlen)
{
    if (!buf || !peer || !peerlen)
        return -1;
    *peerlen = 0;
    if (len == 0)
        return 0;
    if (memcmp(buf, v1_sig, len < sizeof v1_sig ? len : sizeof v1_sig) == 0)
        return len < sizeof v1_sig ? 0 : header_v1((const char *)buf, len, peer, peerlen);
    if (memcmp(buf, v2_sig, len < sizeof v2_sig ? len : sizeof v2_sig) == 0)
        return len < sizeof v2_sig ? 0 : header_v2(buf, len, peer, peerlen);
    return -1;
}
