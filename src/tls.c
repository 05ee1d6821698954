/* tls.c - the listener's TLS context (see tls.h).
 *
 * TLS 1.2 and 1.3 only. TLS 1.2 is limited to ECDHE key exchange with AEAD
 * ciphers: forward secrecy, and nothing on HTTP/2's list of banned suites
 * (RFC 7540 appendix A), which a client may refuse to speak h2 over. Each
 * context has fresh session-ticket keys, so a reload (SIGHUP) rotates them. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include "tls.h"
#include <h2o.h>
#include <h2o/http2.h>

#define TLS12_CIPHERS \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* An encrypted key would make OpenSSL ask on the terminal: refuse it, and
 * say so. */
static int no_passphrase(char *buf, int size, int rwflag, void *asked)
{
    (void)buf, (void)size, (void)rwflag;
    if (asked)
        *(int *)asked = 1;
    return 0;
}

/* Why the last call failed: the system's words for a file that cannot be
 * read (OpenSSL queues them first), else OpenSSL's last reason. */
static const char *reason(char *buf, size_t len)
{
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0) {
        if (ERR_GET_LIB(e) == ERR_LIB_SYS)
            return strerror(ERR_GET_REASON(e));
        last = e;
    }
    const char *r = last ? ERR_reason_error_string(last) : NULL;
    snprintf(buf, len, "%s", r ? r : errno ? strerror(errno) : "unknown error");
    return buf;
}

SSL_CTX *tls_context_new(const char *cert, const char *key, char *err, size_t errlen)
{
    char why[160];
    int asked = 0;
    if (!cert || !key || !err || errlen == 0)
        return NULL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot make a TLS context: %s", reason(why, sizeof why));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, &asked);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        snprintf(err, errlen, "cannot set the TLS 1.2 ciphers: %s", reason(why, sizeof why));
        goto fail;
    }
    errno = 0;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "cannot load the TLS certificate %s: %s", cert, reason(why, sizeof why));
        goto fail;
    }
    errno = 0;
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (asked)
            snprintf(err, errlen, "cannot load the TLS key %s: it is encrypted; give it unencrypted, "
                     "readable by tokend only", key);
        else
            snprintf(err, errlen, "cannot load the TLS key %s: %s", key, reason(why, sizeof why));
        goto fail;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);   /* `asked` goes out of scope */
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

void tls_describe(SSL_CTX *ctx, char *out, size_t outlen)
{
    X509 *x = ctx ? SSL_CTX_get0_certificate(ctx) : NULL;
    struct tm tm;
    if (outlen == 0)
        return;
    if (!x || ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1) {
        snprintf(out, outlen, "validity unknown");
        return;
    }
    snprintf(out, outlen, "valid until %04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

int tls_key_exposed(const char *key)
{
    struct stat st;
    return key && stat(key, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0;
}
