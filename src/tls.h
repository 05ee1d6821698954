/* tls.h - the TLS context of the listener: the certificate pair, the
 * protocol floor and the cipher suites, made the same way at start, by
 * `config check`, and again on SIGHUP (a renewed certificate in place). */
#ifndef TOKEND_TLS_H
#define TOKEND_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

/* A new server context for the PEM chain `cert` and unencrypted PEM key
 * `key`, with ALPN for h2 and http/1.1; NULL with the reason in err (the
 * file, and OpenSSL's or the system's words) on any failure. */
SSL_CTX *tls_context_new(const char *cert, const char *key, char *err, size_t errlen);
/* "valid until <date>" of the context's certificate, into out. */
void tls_describe(SSL_CTX *ctx, char *out, size_t outlen);
/* 1 if group or others may read the key file, else 0. */
int tls_key_exposed(const char *key);

#endif
