/* lookalike.c - the look-alike keys of a username (lookalike.h).
 *
 * A skeleton (Unicode UTS #39, from ICU's confusables data) maps every
 * character to the one it is most often mistaken for: Cyrillic 'а' and
 * Latin 'a' have one skeleton, so do 'rn' and 'm', '1' and 'l'. Case is
 * not a confusion there, so names are folded too; but folding first makes
 * capital 'I' an 'i', which no longer looks like 'l', so each name has two
 * keys: the folded skeleton of the folded name, and the folded skeleton of
 * the name. Keys are texts, so that an index of them keeps names that sort
 * together close (an import's sequential names touch few pages) and reads
 * in a dump. Most names are ASCII: theirs come from a table of each ASCII
 * character's skeleton, which ICU fills once (a skeleton is the
 * characters' skeletons one after the other, and ASCII needs no NFD). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicase.h>
#include <unistr.h>
#include <unicode/uchar.h>
#include <unicode/uspoof.h>
#include <unicode/uversion.h>
#include <unistring/version.h>
#include "crypto.h"
#include "lookalike.h"

#define ASCII_SKELETON_MAX 4

/* Read only once made: ICU's skeleton functions take a const checker and
 * may be called from any thread. An ASCII character's skeleton is in
 * ascii[c] when it is printable ASCII too (its length in ascii_len[c], 0:
 * not). */
static USpoofChecker *checker;
static char ascii[128][ASCII_SKELETON_MAX];
static uint8_t ascii_len[128];
static pthread_once_t checker_once = PTHREAD_ONCE_INIT;

/* The skeleton of in (len bytes of UTF-8), malloc'd, its length in *out_len;
 * NULL when ICU refuses it or there is no memory. */
static char *skeleton(const char *in, size_t len, size_t *out_len)
{
    char small[512];
    UErrorCode e = U_ZERO_ERROR;
    if (len > INT32_MAX)
        return NULL;
    int32_t n = uspoof_getSkeletonUTF8(checker, 0, in, (int32_t)len, small, sizeof small, &e);
    if (e != U_BUFFER_OVERFLOW_ERROR && (U_FAILURE(e) || n < 0))
        return NULL;
    char *out = malloc((size_t)n + 1);
    if (out && e == U_BUFFER_OVERFLOW_ERROR) {
        e = U_ZERO_ERROR;
        uspoof_getSkeletonUTF8(checker, 0, in, (int32_t)len, out, n + 1, &e);
    } else if (out) {
        memcpy(out, small, (size_t)n);
    }
    if (out && U_FAILURE(e)) {
        free(out);
        return NULL;
    }
    *out_len = (size_t)n;
    return out;
}

static void open_checker(void)
{
    UErrorCode e = U_ZERO_ERROR;
    USpoofChecker *c = uspoof_open(&e);
    if (U_FAILURE(e)) {
        if (c)
            uspoof_close(c);
        return;
    }
    checker = c;
    for (int ch = 0x21; ch < 0x7f; ch++) {
        char one = (char)ch;
        size_t n = 0;
        char *sk = skeleton(&one, 1, &n);
        int plain = sk && n >= 1 && n <= ASCII_SKELETON_MAX;
        for (size_t i = 0; plain && i < n; i++)
            plain = (unsigned char)sk[i] > 0x20 && (unsigned char)sk[i] < 0x7f;
        if (plain) {
            memcpy(ascii[ch], sk, n);
            ascii_len[ch] = (uint8_t)n;
        }
        free(sk);
    }
}

static char version[96];
static pthread_once_t version_once = PTHREAD_ONCE_INIT;

static void make_version(void)
{
    UVersionInfo icu, unicode;
    char a[U_MAX_VERSION_STRING_LENGTH], b[U_MAX_VERSION_STRING_LENGTH];
    u_getVersion(icu);
    u_getUnicodeVersion(unicode);
    u_versionToString(icu, a);
    u_versionToString(unicode, b);
    int u = _libunistring_version;   /* (major << 16) + (minor << 8) + subminor */
    snprintf(version, sizeof version, "keys 1; ICU %s; Unicode %s; libunistring %d.%d.%d", a, b,
             u >> 16, u >> 8 & 0xff, u & 0xff);
}

const char *lookalike_version(void)
{
    pthread_once(&version_once, make_version);
    return version;
}

static char *folded(const char *in, size_t len, size_t *out_len)
{
    return (char *)u8_casefold((const uint8_t *)in, len, NULL, NULL, NULL, out_len);
}

#define TAG_LONG 1    /* a long skeleton's digest */
#define TAG_BYTES 2   /* the digest of a name that is not UTF-8 */

/* text (len bytes) as a key: itself when it fits and holds no NUL (and
 * tag is TAG_LONG), else tag and the hex of its digest. */
static void make_key(char *key, size_t *key_len, char tag, const char *text, size_t len)
{
    static const uint8_t domain[32] = "tokend look-alike name keys v1";
    if (tag == TAG_LONG && len <= LOOKALIKE_KEY_MAX && !memchr(text, '\0', len)) {
        memcpy(key, text, len);
        *key_len = len;
        return;
    }
    uint8_t d[16];
    crypto_digest(d, text, len, domain);
    key[0] = tag;
    for (size_t i = 0; i < sizeof d; i++)
        snprintf(key + 1 + 2 * i, 3, "%02x", d[i]);
    *key_len = 1 + 2 * sizeof d;
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* The keys of an ASCII name from the table; 0, or -1 when a character is
 * not in it (a space, a control) or a key would be a digest. */
static int ascii_keys(const char *name, size_t len, char *k, size_t *klen, char *l, size_t *llen)
{
    size_t kn = 0, ln = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i], f = (unsigned char)lower(name[i]);
        if (c >= 0x80 || !ascii_len[c] || !ascii_len[f] ||
            kn + ascii_len[f] > LOOKALIKE_KEY_MAX || ln + ascii_len[c] > LOOKALIKE_KEY_MAX)
            return -1;
        for (size_t j = 0; j < ascii_len[f]; j++)
            k[kn++] = lower(ascii[f][j]);
        for (size_t j = 0; j < ascii_len[c]; j++)
            l[ln++] = lower(ascii[c][j]);
    }
    *klen = kn, *llen = ln;
    return 0;
}

int lookalike_keys_icu(const char *name, size_t len, char *case_key, size_t *case_len,
                       char *look_key, size_t *look_len)
{
    size_t flen = 0, klen = 0, kflen = 0, slen = 0, llen = 0;
    pthread_once(&checker_once, open_checker);
    if (!checker || !name || !case_key || !case_len || !look_key || !look_len)
        return -1;
    char *f = folded(name, len, &flen);
    char *k = f ? skeleton(f, flen, &klen) : NULL;
    char *kf = k ? folded(k, klen, &kflen) : NULL;
    char *s = kf ? skeleton(name, len, &slen) : NULL;
    char *l = s ? folded(s, slen, &llen) : NULL;
    if (l) {
        make_key(case_key, case_len, TAG_LONG, kf, kflen);
        make_key(look_key, look_len, TAG_LONG, l, llen);
    }
    free(f), free(k), free(kf), free(s), free(l);
    return l ? 0 : -1;
}

int lookalike_keys(const char *name, size_t len, char *case_key, size_t *case_len, char *look_key,
                   size_t *look_len)
{
    if (!name || !case_key || !case_len || !look_key || !look_len)
        return -1;
    pthread_once(&checker_once, open_checker);
    if (!checker)
        return -1;
    if (ascii_keys(name, len, case_key, case_len, look_key, look_len) == 0)
        return 0;
    if (u8_check((const uint8_t *)name, len) != NULL) {   /* not UTF-8: its bytes */
        make_key(case_key, case_len, TAG_BYTES, name, len);
        memcpy(look_key, case_key, *case_len);
        *look_len = *case_len;
        return 0;
    }
    return lookalike_keys_icu(name, len, case_key, case_len, look_key, look_len);
}
