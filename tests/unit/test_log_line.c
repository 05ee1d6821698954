/* test_log_line.c - the access log's lines (src/log_line.h) and their way
 * through a loop's ring (src/log.h): the exact bytes of both formats;
 * every byte value in a path and in a client's request id, at every place
 * and length the escaper takes apart, against a plain byte-by-byte escaper,
 * and each JSON line parsed back; fields cut so that no line passes
 * LOG_LINE_MAX; numbers and times at their edges; events; and a ring
 * written round more than once, each line whole in the file or dropped. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "log_line.h"

#define T0 1764524285354ull  /* 2025-11-30T17:38:05.354Z */

static log_request verify_line(void)
{
    return (log_request){
        .time_ms = T0,
        .request_id = "f1faf2f8-0-44d", .request_id_len = 14,
        .method = "POST", .method_len = 4,
        .path = "/token/verify", .path_len = 13,
        .rpc = "tokend.v1.Tokend/Verify",
        .protocol = "json",
        .status = 200,
        .code = "OK",
        .duration_ns = 96400,
        .bytes_in = 55, .bytes_out = 211,
        .client = "127.0.0.1",
        .app_id = 7, .user_id = 12345,
    };
}

static char *line_of(log_format f, const log_request *r)
{
    static char buf[LOG_LINE_MAX + 1];
    size_t n = log_line_request(buf, f, r);
    assert_true(n <= LOG_LINE_MAX);
    assert_int_equal(buf[n - 1], '\n');
    buf[n] = '\0';
    return buf;
}

static void test_json_bytes(void **state)
{
    log_request r = verify_line();
    assert_string_equal(line_of(LOG_FORMAT_JSON, &r),
        "{\"time\":\"2025-11-30T17:38:05.354Z\",\"type\":\"request\",\"request_id\":\"f1faf2f8-0-44d\","
        "\"method\":\"POST\",\"path\":\"/token/verify\",\"rpc\":\"tokend.v1.Tokend/Verify\","
        "\"protocol\":\"json\",\"status\":200,\"code\":\"OK\",\"duration_ms\":0.096,\"bytes_in\":55,"
        "\"bytes_out\":211,\"client\":\"127.0.0.1\",\"app_id\":7,\"user_id\":12345}\n");
    /* what is not known is left out */
    r.request_id = NULL, r.rpc = NULL, r.code = NULL, r.client = "", r.app_id = 0, r.user_id = 0;
    r.status = 404, r.bytes_in = 0;
    assert_string_equal(line_of(LOG_FORMAT_JSON, &r),
        "{\"time\":\"2025-11-30T17:38:05.354Z\",\"type\":\"request\",\"method\":\"POST\","
        "\"path\":\"/token/verify\",\"protocol\":\"json\",\"status\":404,\"duration_ms\":0.096,"
        "\"bytes_in\":0,\"bytes_out\":211}\n");
}

/* Names with their lengths given are written as those measured, and cut
 * at the same place. */
static void test_name_lengths(void **state)
{
    static char name[300];
    for (int f = 0; f < 2; f++) {
        log_format fmt = f ? LOG_FORMAT_TEXT : LOG_FORMAT_JSON;
        log_request r = verify_line();
        char want[LOG_LINE_MAX + 1];
        strcpy(want, line_of(fmt, &r));
        r.rpc_len = 23, r.protocol_len = 4, r.code_len = 2, r.client_len = 9;
        assert_string_equal(line_of(fmt, &r), want);

        memset(name, 'n', sizeof name - 1);
        r = verify_line();
        r.rpc = r.protocol = r.code = r.client = name;
        strcpy(want, line_of(fmt, &r));
        r.rpc_len = r.protocol_len = r.code_len = r.client_len = sizeof name - 1;
        assert_string_equal(line_of(fmt, &r), want);
        assert_null(strstr(want, name + sizeof name - 1 - 129)); /* cut at 128 */
    }
}

/* A name of every length up to past the cut, its length given, is
 * written as the same name measured (each length copies its own way). */
static void test_name_every_length(void **state)
{
    char name[150];
    for (size_t n = 1; n < sizeof name; n++) {
        for (size_t i = 0; i < n; i++)
            name[i] = (char)('A' + i % 26 + (i / 26) % 2 * 32);
        name[n] = '\0';
        for (int f = 0; f < 2; f++) {
            log_format fmt = f ? LOG_FORMAT_TEXT : LOG_FORMAT_JSON;
            log_request r = verify_line();
            char want[LOG_LINE_MAX + 1];
            r.rpc = r.protocol = r.code = r.client = name;
            strcpy(want, line_of(fmt, &r));
            r.rpc_len = r.protocol_len = r.code_len = r.client_len = n;
            if (strcmp(line_of(fmt, &r), want) != 0)
                fail_msg("n %zu: %s", n, line_of(fmt, &r));
        }
    }
}

static void test_text_bytes(void **state)
{
    log_request r = verify_line();
    assert_string_equal(line_of(LOG_FORMAT_TEXT, &r),
        "2025-11-30T17:38:05.354Z request f1faf2f8-0-44d 127.0.0.1 \"POST /token/verify\" "
        "tokend.v1.Tokend/Verify json 200 OK 0.096ms in=55 out=211 app=7 user=12345\n");
    r.request_id = NULL, r.rpc = NULL, r.code = NULL, r.client = NULL, r.app_id = 0, r.user_id = 0;
    r.method = NULL, r.path = NULL;
    assert_string_equal(line_of(LOG_FORMAT_TEXT, &r),
        "2025-11-30T17:38:05.354Z request - - \" \" - json 200 - 0.096ms in=55 out=211 app=0 "
        "user=0\n");
}

/* The escaper the fast one must agree with. */
static size_t plain_escape(char *out, const unsigned char *s, size_t n)
{
    char *p = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            p += sprintf(p, "\\%c", s[i]);
        else if (s[i] < 0x20 || s[i] >= 0x7f)
            p += sprintf(p, "\\u%04x", s[i]);
        else
            *p++ = (char)s[i];
    }
    *p = '\0';
    return (size_t)(p - out);
}

/* The JSON line, parsed: the path and the id come back as sent (a byte
 * from 0x80 as the code point of its value). */
static void check_parses(const char *line, const unsigned char *sent, size_t n)
{
    static const char *const keys[] = {"path", "request_id"};
    json_error_t err;
    json_t *j = json_loads(line, JSON_ALLOW_NUL, &err);
    if (!j)
        fail_msg("not JSON (%s): %s", err.text, line);
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(j, keys[k]);
        const unsigned char *g = (const unsigned char *)json_string_value(v);
        const unsigned char *end = g + json_string_length(v);
        assert_non_null(g);
        for (size_t i = 0; i < n; i++) {
            assert_true(g < end);
            if (sent[i] < 0x80) {
                assert_int_equal(*g++, sent[i]);
            } else {  /* U+0080..U+00FF in UTF-8 */
                assert_int_equal(*g++, 0xc0 | sent[i] >> 6);
                assert_int_equal(*g++, 0x80 | (sent[i] & 0x3f));
            }
        }
        assert_true(g == end);
    }
    json_decref(j);
}

/* Every byte value, at every place, in every length up to 40 (below 4, 4
 * to 7, 8 to 15, and blocks of 16 with the last overlapping), as the path
 * and as the request id, in both formats. */
static void test_every_byte_everywhere(void **state)
{
    unsigned char s[40];
    char want[40 * 6 + 1], json_want[1024], text_want[1024];
    for (size_t n = 1; n <= sizeof s; n++) {
        for (size_t at = 0; at < n; at++) {
            for (unsigned c = 0; c < 256; c++) {
                for (size_t i = 0; i < n; i++)
                    s[i] = (unsigned char)('a' + i % 26);
                s[at] = (unsigned char)c;
                if (at + 1 < n && c % 3 == 0)
                    s[n - 1] = 0xff;  /* a second one in the last block */
                plain_escape(want, s, n);
                log_request r = verify_line();
                r.path = (const char *)s, r.path_len = n;
                r.request_id = (const char *)s, r.request_id_len = n;
                snprintf(json_want, sizeof json_want, "\"request_id\":\"%s\",\"method\":\"POST\","
                         "\"path\":\"%s\",\"rpc\"", want, want);
                const char *line = line_of(LOG_FORMAT_JSON, &r);
                if (!strstr(line, json_want))
                    fail_msg("n %zu at %zu byte %u: %s", n, at, c, line);
                check_parses(line, s, n);
                snprintf(text_want, sizeof text_want, " request %s 127.0.0.1 \"POST %s\" ", want,
                         want);
                line = line_of(LOG_FORMAT_TEXT, &r);
                if (!strstr(line, text_want))
                    fail_msg("text n %zu at %zu byte %u: %s", n, at, c, line);
            }
        }
    }
}

static void test_method_escaped(void **state)
{
    log_request r = verify_line();
    r.method = "G\"T", r.method_len = 3;
    assert_non_null(strstr(line_of(LOG_FORMAT_JSON, &r), "\"method\":\"G\\\"T\""));
    r.method = "GE\nT\x80", r.method_len = 5;
    assert_non_null(strstr(line_of(LOG_FORMAT_TEXT, &r), "\"GE\\u000aT\\u0080 /token/verify\""));
}

/* The longest fields, every byte escaped to 6, still fit: cut, not
 * overflowing. */
static void test_cut_to_fit(void **state)
{
    static char big[4096], name[4096];
    memset(big, 0x01, sizeof big);
    memset(name, 'n', sizeof name - 1);
    log_request r = verify_line();
    r.path = big, r.path_len = sizeof big;
    r.request_id = big, r.request_id_len = sizeof big;
    r.method = big, r.method_len = sizeof big;
    r.rpc = r.protocol = r.code = r.client = name;
    r.status = -1, r.duration_ns = r.bytes_in = r.bytes_out = r.app_id = r.user_id = UINT64_MAX;
    for (int f = 0; f < 2; f++) {
        const char *line = line_of(f ? LOG_FORMAT_TEXT : LOG_FORMAT_JSON, &r);
        assert_true(strlen(line) <= LOG_LINE_MAX);
        if (!f) {
            json_error_t err;
            json_t *j = json_loads(line, JSON_DECODE_INT_AS_REAL, &err);
            if (!j)
                fail_msg("not JSON (%s): %s", err.text, line);
            assert_int_equal(strlen(json_string_value(json_object_get(j, "path"))), 256);
            json_decref(j);
        }
    }
}

static void test_numbers_and_times(void **state)
{
    static const struct {
        uint64_t v;
        const char *text;
    } nums[] = {{0, "0"}, {9, "9"}, {10, "10"}, {99, "99"}, {100, "100"}, {999, "999"},
                {1000, "1000"}, {1009, "1009"}, {9999, "9999"}, {10001, "10001"},
                {12345, "12345"}, {99999, "99999"}, {100000, "100000"}, {100001, "100001"},
                {999999, "999999"}, {1000000, "1000000"}, {1000999, "1000999"}, {123456789, "123456789"}, {UINT64_MAX / 10, "1844674407370955161"},
                {UINT64_MAX, "18446744073709551615"}};
    char want[64];
    log_request r = verify_line();
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        r.bytes_in = nums[i].v;
        snprintf(want, sizeof want, "\"bytes_in\":%s,", nums[i].text);
        assert_non_null(strstr(line_of(LOG_FORMAT_JSON, &r), want));
    }
    static const struct {
        int status;
        const char *text;
    } statuses[] = {{0, "0"}, {99, "99"}, {100, "100"}, {200, "200"}, {599, "599"},
                    {999, "999"}, {1000, "1000"}, {-1, "18446744073709551615"}};
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        r.status = statuses[i].status;
        snprintf(want, sizeof want, "\"status\":%s,", statuses[i].text);
        assert_non_null(strstr(line_of(LOG_FORMAT_JSON, &r), want));
    }
    r.status = 200;
    static const struct {
        uint64_t ns;
        const char *text;
    } durations[] = {{0, "0.000"}, {499, "0.000"}, {500, "0.001"}, {1234567, "1.235"},
                     {9999499, "9.999"}, {9999500, "10.000"}, {99999500, "100.000"},
                     {999999500, "1000.000"}, {12345678901, "12345.679"},
                     {UINT64_MAX - 500, "18446744073709.551"}};
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
        r.duration_ns = durations[i].ns;
        snprintf(want, sizeof want, "\"duration_ms\":%s,", durations[i].text);
        assert_non_null(strstr(line_of(LOG_FORMAT_JSON, &r), want));
    }
    /* the time as the clock moves: within a ms, a ms, a second, a day, back */
    static const struct {
        uint64_t ms;
        const char *text;
    } times[] = {{T0, "2025-11-30T17:38:05.354Z"}, {T0, "2025-11-30T17:38:05.354Z"},
                 {T0 + 1, "2025-11-30T17:38:05.355Z"}, {T0 + 645, "2025-11-30T17:38:05.999Z"},
                 {T0 + 646, "2025-11-30T17:38:06.000Z"},
                 {T0 + 86400000, "2025-12-01T17:38:05.354Z"}, {0, "1970-01-01T00:00:00.000Z"},
                 {T0 + 7, "2025-11-30T17:38:05.361Z"}};
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        r.time_ms = times[i].ms;
        snprintf(want, sizeof want, "{\"time\":\"%s\",", times[i].text);
        assert_non_null(strstr(line_of(LOG_FORMAT_JSON, &r), want));
        snprintf(want, sizeof want, "%s request ", times[i].text);
        assert_memory_equal(line_of(LOG_FORMAT_TEXT, &r), want, strlen(want));
    }
}

static void test_events(void **state)
{
    char buf[LOG_EVENT_MAX + 1];
    size_t n = log_line_event(buf, LOG_FORMAT_JSON, 1, T0, LOG_WARN, "disk", "full \"x\"\n");
    buf[n] = '\0';
    assert_string_equal(buf, "{\"time\":\"2025-11-30T17:38:05.354Z\",\"type\":\"event\","
                             "\"level\":\"warn\",\"event\":\"disk\",\"msg\":\"full \\\"x\\\"\\u000a\"}\n");
    n = log_line_event(buf, LOG_FORMAT_TEXT, 1, T0, LOG_ERROR, "reload", "no --config");
    buf[n] = '\0';
    assert_string_equal(buf, "2025-11-30T17:38:05.354Z error reload: tokend: no --config\n");
    n = log_line_event(buf, LOG_FORMAT_JSON, 0, T0, LOG_INFO, "start", "cannot listen");
    buf[n] = '\0';
    assert_string_equal(buf, "tokend: cannot listen\n");
    static char msg[4096];
    memset(msg, '\\', sizeof msg - 1);
    n = log_line_event(buf, LOG_FORMAT_JSON, 1, T0, LOG_INFO, "x", msg);
    assert_true(n <= LOG_EVENT_MAX);
    buf[n] = '\0';
    json_error_t err;
    json_t *j = json_loads(buf, 0, &err);
    assert_non_null(j);
    json_decref(j);
}

static int ring_line(log_ring *ring, int i)
{
    char id[32];
    log_request r = verify_line();
    r.request_id = id;
    r.request_id_len = (size_t)snprintf(id, sizeof id, "line-%d", i);
    r.path_len = (size_t)i % 13;  /* lines of different lengths end anywhere in the ring */
    return log_access(ring, &r) == 0;
}

/* Round the ring a few times, the writer draining it, then faster than it
 * drains until a line is refused: each accepted line reaches the file
 * whole (also the ones across the ring's end), a refused one not at all. */
static void test_ring_round(void **state)
{
    char path[] = "/tmp/test_log_line.XXXXXX", err[256];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(log_start(LOG_FORMAT_JSON, path, err, sizeof err), 0);
    log_ring *ring = log_ring_new();
    assert_non_null(ring);
    int i = 0;
    size_t written = 0;
    for (int round = 0; round < 500 && written < 3000; round++, usleep(30000))
        for (int k = 0; k < 300; k++)
            written += ring_line(ring, i++);
    assert_true(written >= 3000);   /* ~3 rings' worth */
    int refused = 0;
    for (int k = 0; k < 100000 && !refused; k++) {
        refused = !ring_line(ring, i++);
        written += !refused;
    }
    assert_true(refused);
    log_stop();

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[LOG_LINE_MAX + 1];
    size_t read = 0;
    int last = -1;
    while (fgets(line, sizeof line, f)) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        if (!j)
            fail_msg("not JSON: %s", line);
        int k = atoi(json_string_value(json_object_get(j, "request_id")) + 5);
        assert_true(k > last);   /* in order, none twice */
        last = k;
        assert_int_equal(strlen(json_string_value(json_object_get(j, "path"))), (size_t)k % 13);
        json_decref(j);
        read++;
    }
    fclose(f);
    unlink(path);
    assert_int_equal(read, written);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_bytes),       cmocka_unit_test(test_text_bytes),
        cmocka_unit_test(test_name_lengths),     cmocka_unit_test(test_name_every_length),
        cmocka_unit_test(test_every_byte_everywhere), cmocka_unit_test(test_method_escaped),
        cmocka_unit_test(test_cut_to_fit),       cmocka_unit_test(test_numbers_and_times),
        cmocka_unit_test(test_events),           cmocka_unit_test(test_ring_round),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
