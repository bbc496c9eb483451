/* fuzz_srvline.c - fuzz target: the text protocol's pure line helpers
 * (SRV_StripTelnet, SRV_Split, SRV_TokenEqual), the first things every
 * byte from a client goes through.  A fast companion of fuzz_proto, which
 * drives the same helpers inside the whole connection path.
 *
 * Input: byte 0 picks a split point and a word limit; the rest is raw
 * client input.  Checked: the telnet filter gives the same bytes whether
 * the input comes in one piece or two (its state carries over), never more
 * bytes than it got, and input without IAC unchanged; splitting gives
 * non-empty words without spaces or tabs that, joined by single spaces,
 * are the line with its blanks collapsed, or -1 exactly when there are
 * more words than the limit; token comparison agrees with strcmp.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "srv.h"

#define MAX_ARGS 64

/* The line with runs of spaces and tabs made one space, trimmed; returns
   the number of words. */
static FUZZ_NOCOV int
collapse(const char *line, char *out)
{
  int words = 0, in_word = 0;
  size_t o = 0;

  for (const char *p = line; *p; p++) {
    if (*p == ' ' || *p == '\t') {
      in_word = 0;
      continue;
    }
    if (!in_word) {
      if (words++ > 0)
        out[o++] = ' ';
      in_word = 1;
    }
    out[o++] = *p;
  }
  out[o] = '\0';
  return words;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  unsigned char *one, *two;
  char *line, *expect, *joined, *argv[MAX_ARGS];
  size_t n1, n2a, n2b, cut;
  int st1 = 0, st2 = 0, max, argc, words;

  if (size < 1 || size > 8192)
    return 0;
  cut = size > 1 ? (size_t)data[0] * (size - 1) / 255 : 0;
  max = data[0] % MAX_ARGS + 1;
  data++;
  size--;

  one = malloc(size + 1);
  two = malloc(size + 1);
  line = malloc(size + 1);
  expect = malloc(2 * size + 2);
  joined = malloc(2 * size + 2);
  FUZZ_CHECK(one && two && line && expect && joined);
  memcpy(one, data, size);
  memcpy(two, data, size);

  /* Telnet filter: one piece or two pieces, same result. */
  n1 = SRV_StripTelnet(one, size, &st1);
  n2a = SRV_StripTelnet(two, cut, &st2);
  memmove(two + n2a, two + cut, size - cut);
  n2b = SRV_StripTelnet(two + n2a, size - cut, &st2);
  FUZZ_CHECK(n1 <= size && n2a + n2b == n1 && st1 == st2);
  FUZZ_CHECK(memcmp(one, two, n1) == 0);
  if (!memchr(data, 0xff, size))
    FUZZ_CHECK(n1 == size && memcmp(one, data, size) == 0 && st1 == 0);

  /* Word splitting of the filtered text up to its first NUL or newline. */
  memcpy(line, one, n1);
  line[n1] = '\0';
  line[strcspn(line, "\n")] = '\0';
  words = collapse(line, expect);
  argc = SRV_Split(line, argv, max);
  if (words > max) {
    FUZZ_CHECK(argc == -1);
  } else {
    size_t o = 0;

    FUZZ_CHECK(argc == words);
    for (int i = 0; i < argc; i++) {
      size_t len = strlen(argv[i]);

      FUZZ_CHECK(len > 0 && !strchr(argv[i], ' ') && !strchr(argv[i], '\t'));
      if (i > 0)
        joined[o++] = ' ';
      memcpy(joined + o, argv[i], len);
      o += len;
    }
    joined[o] = '\0';
    FUZZ_CHECK(strcmp(joined, expect) == 0);

    /* Token comparison, on the first two words. */
    if (argc >= 2)
      FUZZ_CHECK(SRV_TokenEqual(argv[0], argv[1]) == (strcmp(argv[0], argv[1]) == 0));
    if (argc >= 1)
      FUZZ_CHECK(SRV_TokenEqual(argv[0], argv[0]));
  }
  free(one);
  free(two);
  free(line);
  free(expect);
  free(joined);
  return 0;
}
