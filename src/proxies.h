/* proxies.h - the proxies tokend trusts (--trusted-proxies), and the client
 * address they forward in X-Forwarded-For.
 *
 * Behind a TLS proxy or an L7 balancer every connection comes from the
 * proxy: without this, the per-address login throttle would count every
 * client's failures against one address, and the logs would name the proxy.
 * A request whose connection comes from a trusted proxy is known by the
 * right-most X-Forwarded-For address that is not itself a trusted proxy:
 * what the nearest proxies saw, the one part of the header a client cannot
 * forge. A connection from anywhere else is known by its own address, its
 * X-Forwarded-For ignored. Pure: addresses and header values in, text out,
 * so the fuzzer reaches it without h2o. */
#ifndef TOKEND_PROXIES_H
#define TOKEND_PROXIES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXIES_MAX 32        /* networks in --trusted-proxies */
#define PROXIES_V1_MAX 107    /* a PROXY v1 line, CRLF included: the protocol's own bound */
#define PROXIES_V2_MAX 4096   /* a PROXY v2 header with its TLVs (balancers add tens of bytes) */
#define PROXIES_TEXT_MAX 64   /* an address as text, NUL included (INET6_ADDRSTRLEN is 46) */

typedef struct {
    uint8_t family;           /* AF_INET or AF_INET6 */
    uint8_t bits;             /* the prefix length */
    uint8_t addr[16];         /* the network, host bits zero */
} proxies_net;

typedef struct {
    size_t n;                 /* 0: none trusted, no header read */
    int rfc7239;              /* the header is Forwarded (its for=), not X-Forwarded-For */
    proxies_net nets[PROXIES_MAX];
} proxies;

/* Parses a comma-separated list of networks (10.0.0.0/8, fd00::/8) and
 * addresses (one host), spaces around the commas allowed. 0, or -1 with a
 * sentence in why naming the entry at fault. */
int proxies_parse(proxies *p, const char *list, char *why, size_t whylen);

/* Whether sa (an IPv4 or IPv6 address; IPv4-mapped IPv6 counts as IPv4) is
 * in one of p's networks. */
int proxies_trusts(const proxies *p, const struct sockaddr *sa);

/* The client of a request whose connection came from peer: values are its
 * X-Forwarded-For header values in the order they came (several headers
 * are one list), or with p->rfc7239 its Forwarded ones, whose elements'
 * for= are the entries (quoted or not, a port after the address allowed).
 * Returns the length of the client's address written to out as text, or 0
 * when the peer stands: it is not trusted, there is no header, or the
 * right-most entry not trusted is no address ("unknown", an obfuscated
 * name, an element without for=: then the nearest trusted proxy is the
 * client, as it is the last one who knows). Only the right-most
 * PROXIES_ENTRIES_MAX entries are read: past them, the left-most of those
 * stands for the client. */
#define PROXIES_ENTRIES_MAX 64
size_t proxies_client(const proxies *p, const struct sockaddr *peer, const char *const values[],
                      const size_t lens[], size_t nvalues, char out[PROXIES_TEXT_MAX]);

/* A PROXY protocol header at the start of buf, the first bytes a trusted
 * L4 balancer sent on a connection (--proxy-protocol): a v1 text line or a
 * v2 binary header, told apart by their signatures. Returns its length
 * (those bytes are the balancer's, not the client's), 0 when buf is too
 * short to tell, or -1 when buf does not begin with a well-formed header:
 * the bytes then go on as they are (the balancer's own health check, or
 * HTTP or TLS that fails on them). *peerlen is 0 when a header names no
 * client (v1 UNKNOWN, v2 LOCAL, a family other than TCP over IPv4/IPv6):
 * the balancer stays the peer. */
int proxies_header(const uint8_t *buf, size_t len, struct sockaddr_storage *peer, socklen_t *peerlen);

#endif
