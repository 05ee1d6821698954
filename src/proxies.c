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

int proxies_parse(proxies *p, const char *list, char *why, size_t whylen)
{
    if (!p || !list || !why || !whylen)
        return -1;
    p->n = 0;
    for (const char *s = list;;) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        while (n && is_space(*s))
            s++, n--;
        while (n && is_space(s[n - 1]))
            n--;
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

size_t proxies_client(const proxies *p, const struct sockaddr *peer, const char *const values[],
                      const size_t lens[], size_t nvalues, char out[PROXIES_TEXT_MAX])
{
    address client, a;
    int forwarded = 0;   /* client is an entry of the header, not the peer */
    out[0] = '\0';
    if (!p || !p->n || from_sockaddr(peer, &client) != 0 || !trusted(p, &client))
        return 0;
    /* Right to left: each trusted proxy vouches for the entry before it. */
    for (size_t v = nvalues; v-- > 0;) {
        const char *s = values[v];
        size_t end = lens[v];
        for (;;) {
            size_t start = end;
            while (start > 0 && s[start - 1] != ',')
                start--;
            size_t b = start, e = end;
            while (b < e && is_space(s[b]))
                b++;
            while (e > b && is_space(s[e - 1]))
                e--;
            if (parse_address(s + b, e - b, &a) != 0)
                goto done;   /* no address: the nearest trusted proxy is the client */
            client = a, forwarded = 1;
            if (!trusted(p, &a))
                goto done;
            if (start == 0)
                break;
            end = start - 1;
        }
    }
done:
    if (!forwarded || !inet_ntop(client.family, client.addr, out, PROXIES_TEXT_MAX)) {
        out[0] = '\0';
        return 0;
    }
    return strlen(out);
}
