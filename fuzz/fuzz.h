/* fuzz.h - what every wavelock fuzz target provides and may use.
 *
 * A target is one LLVMFuzzerTestOneInput.  It is built twice: with clang and
 * libFuzzer by `make fuzz` (fuzz/run.sh), and with the configured compiler
 * and fuzz/replay.c as a `make check` program that feeds it every file of
 * fuzz/corpus/<target>/ and fuzz/regress/<target>/.  Targets set themselves
 * up lazily on their first input, so both drivers behave alike.  An
 * invariant that does not hold is a bug: FUZZ_CHECK reports it and aborts,
 * which both libFuzzer and the replay driver count as a crash.
 */
#ifndef WL_FUZZ_H
#define WL_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* The entry point libFuzzer (or fuzz/replay.c) calls for each input; 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort with a message naming the broken invariant. */
void FUZZ_Fail(const char *file, int line, const char *what) __attribute__((noreturn));

/* Checking code of a target that libFuzzer should not count as coverage
   (nor trace its comparisons): it would only slow the search down. */
#if defined(__clang__)
#define FUZZ_NOCOV __attribute__((no_sanitize("coverage")))
#else
#define FUZZ_NOCOV
#endif

#define FUZZ_CHECK(cond) \
  do { if (!(cond)) FUZZ_Fail(__FILE__, __LINE__, #cond); } while (0)

/* A scratch directory under /dev/shm (or $TMPDIR) for this process,
   removed with everything in it at exit; the same path on every call. */
const char *FUZZ_TempDir(void);

/* An in-memory file (memfd) holding data, reachable as a path
   "/proc/self/fd/N" that stays valid until the next call.  NULL on error. */
const char *FUZZ_MemFile(const uint8_t *data, size_t size);

/* Leaks LeakSanitizer must not report (fuzz_util.c): libconfig 1.5 loses
   string tokens (from its lexer and its string buffer) on a syntax error
   (upstream issue hyperrealm/libconfig#142, fixed in 1.7.3).  ASan calls
   this; nothing else does. */
const char *__lsan_default_suppressions(void);

#endif
