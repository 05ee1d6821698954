/* test_conninfo.c - a connection string as printed: libpq parses it (URL or
 * key=value, quoted or spaced), its passwords are ****. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "cluster.h"

static void masked(const char *in, const char *want)
{
    char out[512];
    cluster_conninfo_masked(in, out, sizeof out);
    assert_string_equal(out, want);
}

static void test_forms(void **state)
{
    (void)state;
    masked("host=db password = secret user=u", "user=u password=**** host=db");
    masked("host=db password='a b' dbname=t", "password=**** dbname=t host=db");
    masked("postgresql://tok:s3cret@db/t?sslpassword=x%20y", "user=tok password=**** dbname=t "
           "host=db sslpassword=****");
    masked("host='a b' dbname=it\\'s", "dbname='it\\'s' host='a b'");
    masked("host=db password='unterminated", "(not a PostgreSQL connection string: not shown)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_forms)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
