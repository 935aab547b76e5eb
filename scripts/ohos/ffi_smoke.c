/* Built for an ohos target by scripts/test-ohos.sh against the cdylib, run natively or under
 * qemu: the library loads through musl's loader and the C ABI works across the boundary (a
 * thread-local error message, a client whose connection thread starts and is joined). The full
 * C programs of tests/c run on the host only (they need gcc and valgrind there). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "receipt.h"

#define CHECK(cond, what)                                                          \
    do {                                                                           \
        if (!(cond)) {                                                             \
            const char *err = rcpt_last_error();                                   \
            fprintf(stderr, "ffi_smoke: %s failed (%s)\n", what, err ? err : "-"); \
            return 1;                                                              \
        }                                                                          \
    } while (0)

int main(int argc, char **argv) {
    /* argv[1]: an empty directory for the client's store, made and removed by the script. */
    CHECK(argc == 2, "usage: ffi_smoke <empty dir>");

    const char *version = rcpt_version();
    CHECK(version && strncmp(version, "receipt-ffi ", 12) == 0, "rcpt_version");

    rcpt_options *options = rcpt_options_new();
    CHECK(options != NULL, "rcpt_options_new");
    rcpt_client *client = NULL;
    /* No data dir: refused, and the reason is kept in the calling thread's last error. */
    CHECK(rcpt_client_new(options, &client) != RCPT_OK && client == NULL, "refusing options without a data dir");
    const char *why = rcpt_last_error();
    CHECK(why != NULL && why[0] != '\0', "rcpt_last_error after a refusal");
    char reason[200]; /* the error string lives only until the thread's next call */
    snprintf(reason, sizeof reason, "%s", why);

    CHECK(rcpt_options_set_data_dir(options, argv[1]) == RCPT_OK, "rcpt_options_set_data_dir");
    CHECK(rcpt_client_new(options, &client) == RCPT_OK && client != NULL, "rcpt_client_new");
    rcpt_options_free(options);
    rcpt_client_free(client);
    printf("   ffi_smoke: %s loaded, refused bad options (\"%s\"), created and freed a client\n", version, reason);
    return 0;
}
