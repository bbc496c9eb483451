/* client_fmt.c - pure helpers of the client: parsing and output formats. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clt.h"
#include "util.h"

/* ---- lines and words ---------------------------------------------------- */

CLT_LineKind
CLT_Classify(const char *line)
{
  if (line[0] == '*' && (line[1] == ' ' || line[1] == '\0'))
    return CLT_LINE_EVENT;
  if (strncmp(line, "OK", 2) == 0 && (line[2] == '\0' || line[2] == ' '))
    return CLT_LINE_OK;
  if (strncmp(line, "ERR", 3) == 0 && (line[3] == '\0' || line[3] == ' '))
    return CLT_LINE_ERR;
  return CLT_LINE_DATA;
}

int
CLT_SplitKv(char *line, CLT_Kv *kv, int max)
{
  int n = 0;
  char *p = line;

  while (*p && n < max) {
    char *word, *eq;

    while (*p == ' ' || *p == '\t')
      p++;
    if (!*p)
      break;
    word = p;
    while (*p && *p != ' ' && *p != '\t')
      p++;
    if (*p)
      *p++ = '\0';
    eq = strchr(word, '=');
    if (eq) {
      *eq = '\0';
      kv[n].key = word;
      kv[n].value = eq + 1;
    } else {
      kv[n].key = NULL;
      kv[n].value = word;
    }
    n++;
  }
  return n;
}

const char *
CLT_KvGet(const CLT_Kv *kv, int n, const char *key)
{
  for (int i = 0; i < n; i++)
    if (kv[i].key && strcmp(kv[i].key, key) == 0)
      return kv[i].value;
  return NULL;
}

int
CLT_AllKv(const CLT_Kv *kv, int n)
{
  if (n <= 0)
    return 0;
  for (int i = 0; i < n; i++)
    if (!kv[i].key || !kv[i].key[0])
      return 0;
  return 1;
}

/* ---- numbers ------------------------------------------------------------ */

int
CLT_ParseSeconds(const char *s, double *out)
{
  double v;

  if (UTL_ParseDouble(s, &v) != 0 || v < 0.0 || v > 1e9)
    return -1;
  *out = v;
  return 0;
}

int
CLT_ParsePort(const char *s, int *port)
{
  long v;

  if (!s || !isdigit((unsigned char)*s) || UTL_ParseInt(s, 1, 65535, &v) != 0)
    return -1;
  *port = (int)v;
  return 0;
}

int
CLT_ParseCount(const char *s, long *out)
{
  if (!s || !isdigit((unsigned char)*s))
    return -1;
  return UTL_ParseInt(s, 1, LONG_MAX, out);
}

/* ---- -m arguments ------------------------------------------------------- */

int
CLT_SplitCommands(char *text, char **cmds, int max)
{
  int n = 0;
  char *p = text;

  for (;;) {
    char *start = p, *end;
    size_t span = strcspn(p, ";\n\r");
    int last = p[span] == '\0';

    p[span] = '\0';
    while (*start == ' ' || *start == '\t')
      start++;
    end = start + strlen(start);
    while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
      *--end = '\0';
    if (*start) {
      if (n >= max)
        return -1;
      cmds[n++] = start;
    }
    if (last)
      break;
    p += span + 1;
  }
  return n;
}

/* ---- aligned tables ----------------------------------------------------- */

#define TABLE_MAX_WORDS 128

struct CLT_Table {
  char **keys;                 /* columns, in order of first appearance */
  int n_keys;
  char ***cells;               /* cells[row][col], NULL = missing */
  int n_rows;
};

CLT_Table *
CLT_TableNew(void)
{
  return calloc(1, sizeof(CLT_Table));
}

static int
table_column(CLT_Table *t, const char *key)
{
  char **keys;

  for (int i = 0; i < t->n_keys; i++)
    if (strcmp(t->keys[i], key) == 0)
      return i;
  keys = realloc(t->keys, (size_t)(t->n_keys + 1) * sizeof(*keys));
  if (!keys)
    return -1;
  t->keys = keys;
  if (!(keys[t->n_keys] = strdup(key)))
    return -1;
  /* Grow every existing row by one (missing) cell. */
  for (int r = 0; r < t->n_rows; r++) {
    char **row = realloc(t->cells[r], (size_t)(t->n_keys + 1) * sizeof(*row));
    if (!row) {
      free(keys[t->n_keys]);
      return -1;
    }
    row[t->n_keys] = NULL;
    t->cells[r] = row;
  }
  return t->n_keys++;
}

int
CLT_TableAdd(CLT_Table *t, const char *line)
{
  CLT_Kv kv[TABLE_MAX_WORDS];
  char *copy = strdup(line);
  char ***cells, **row;
  int n;

  if (!copy)
    return -1;
  n = CLT_SplitKv(copy, kv, TABLE_MAX_WORDS);
  if (!CLT_AllKv(kv, n) || n == TABLE_MAX_WORDS) {
    free(copy);
    return 0;
  }
  cells = realloc(t->cells, (size_t)(t->n_rows + 1) * sizeof(*cells));
  if (!cells) {
    free(copy);
    return -1;
  }
  t->cells = cells;
  row = calloc((size_t)(t->n_keys > 0 ? t->n_keys : 1), sizeof(*row));
  if (!row) {
    free(copy);
    return -1;
  }
  cells[t->n_rows++] = row;
  for (int i = 0; i < n; i++) {
    int col = table_column(t, kv[i].key);
    if (col < 0) {
      free(copy);
      return -1;
    }
    row = t->cells[t->n_rows - 1];
    if (!row[col] && !(row[col] = strdup(kv[i].value))) {
      free(copy);
      return -1;
    }
  }
  free(copy);
  return 1;
}

int
CLT_TableRows(const CLT_Table *t)
{
  return t->n_rows;
}

static int
is_number(const char *s)
{
  char *end;

  if (!*s)
    return 0;
  errno = 0;
  (void)strtod(s, &end);
  return *end == '\0';
}

void
CLT_TablePrint(const CLT_Table *t, FILE *out)
{
  size_t *width = calloc((size_t)t->n_keys + 1, sizeof(*width));
  int *numeric = calloc((size_t)t->n_keys + 1, sizeof(*numeric));

  if (!width || !numeric) {
    free(width);
    free(numeric);
    return;
  }
  for (int c = 0; c < t->n_keys; c++) {
    int any = 0;

    width[c] = strlen(t->keys[c]);
    numeric[c] = 1;
    for (int r = 0; r < t->n_rows; r++) {
      const char *v = t->cells[r][c];
      size_t len = v ? strlen(v) : 1;

      if (len > width[c])
        width[c] = len;
      if (v) {
        any = 1;
        if (!is_number(v))
          numeric[c] = 0;
      }
    }
    if (!any)
      numeric[c] = 0;
  }
  for (int r = -1; r < t->n_rows; r++) {
    for (int c = 0; c < t->n_keys; c++) {
      const char *v = r < 0 ? t->keys[c] : t->cells[r][c] ? t->cells[r][c] : "-";
      int last = c == t->n_keys - 1;
      int w = (int)width[c];

      if (c > 0)
        fputs("  ", out);
      if (numeric[c])
        fprintf(out, "%*s", w, v);
      else if (last)
        fputs(v, out);
      else
        fprintf(out, "%-*s", w, v);
    }
    fputc('\n', out);
  }
  free(width);
  free(numeric);
}

void
CLT_TableFree(CLT_Table *t)
{
  if (!t)
    return;
  for (int r = 0; r < t->n_rows; r++) {
    for (int c = 0; c < t->n_keys; c++)
      free(t->cells[r][c]);
    free(t->cells[r]);
  }
  for (int c = 0; c < t->n_keys; c++)
    free(t->keys[c]);
  free(t->cells);
  free(t->keys);
  free(t);
}

/* ---- watch --csv -------------------------------------------------------- */

#define CSV_MAX_WORDS 64

typedef struct {
  char *laser;
  char *state;
} CsvState;

struct CLT_Csv {
  CsvState *lasers;
  int n;
};

CLT_Csv *
CLT_CsvNew(void)
{
  return calloc(1, sizeof(CLT_Csv));
}

const char *
CLT_CsvHeader(void)
{
  return "time,laser,freq_thz,error_mhz,piezo_v,current_v,state";
}

/* Remember laser's state; -1 on memory exhaustion. */
static int
csv_set_state(CLT_Csv *c, const char *laser, const char *state)
{
  CsvState *l;
  char *s;

  for (int i = 0; i < c->n; i++) {
    if (strcmp(c->lasers[i].laser, laser) == 0) {
      if (!(s = strdup(state)))
        return -1;
      free(c->lasers[i].state);
      c->lasers[i].state = s;
      return 0;
    }
  }
  l = realloc(c->lasers, (size_t)(c->n + 1) * sizeof(*l));
  if (!l)
    return -1;
  c->lasers = l;
  l[c->n].laser = strdup(laser);
  l[c->n].state = strdup(state);
  if (!l[c->n].laser || !l[c->n].state) {
    free(l[c->n].laser);
    free(l[c->n].state);
    return -1;
  }
  c->n++;
  return 0;
}

static const char *
csv_get_state(const CLT_Csv *c, const char *laser)
{
  for (int i = 0; i < c->n; i++)
    if (strcmp(c->lasers[i].laser, laser) == 0)
      return c->lasers[i].state;
  return NULL;
}

/* Write one CSV field, quoted when needed (RFC 4180); a missing value and
   the daemon's "none" (no valid reading) are written as an empty field. */
static void
csv_field(FILE *out, const char *v)
{
  if (!v || strcmp(v, "none") == 0)
    return;
  if (strpbrk(v, ",\"\r\n")) {
    fputc('"', out);
    for (; *v; v++) {
      if (*v == '"')
        fputc('"', out);
      fputc(*v, out);
    }
    fputc('"', out);
  } else {
    fputs(v, out);
  }
}

static const char *
first_of(const CLT_Kv *kv, int n, const char *a, const char *b, const char *c)
{
  const char *v = CLT_KvGet(kv, n, a);

  if (!v && b)
    v = CLT_KvGet(kv, n, b);
  if (!v && c)
    v = CLT_KvGet(kv, n, c);
  return v;
}

int
CLT_CsvEvent(CLT_Csv *c, const char *event, double now_unix, FILE *out)
{
  CLT_Kv kv[CSV_MAX_WORDS];
  const char *type, *laser, *state, *freq, *t;
  char *copy, tbuf[64];
  int n, reading, ret = 0;

  if (event[0] == '*')
    event += event[1] == ' ' ? 2 : 1;
  if (!(copy = strdup(event)))
    return -1;
  n = CLT_SplitKv(copy, kv, CSV_MAX_WORDS);
  type = n > 0 && !kv[0].key ? kv[0].value : "";
  laser = first_of(kv, n, "laser", "name", NULL);
  state = CLT_KvGet(kv, n, "state");
  freq = CLT_KvGet(kv, n, "freq_thz");
  reading = laser && (strcmp(type, "reading") == 0 || (!type[0] && freq));

  if (laser && state && csv_set_state(c, laser, state) < 0) {
    free(copy);
    return -1;
  }
  if (reading && out) {
    if (!state)
      state = csv_get_state(c, laser);
    t = first_of(kv, n, "t", "time", "ts");
    if (!t) {
      snprintf(tbuf, sizeof(tbuf), "%.3f", now_unix);
      t = tbuf;
    }
    csv_field(out, t);
    fputc(',', out);
    csv_field(out, laser);
    fputc(',', out);
    csv_field(out, freq);
    fputc(',', out);
    csv_field(out, CLT_KvGet(kv, n, "error_mhz"));
    fputc(',', out);
    csv_field(out, CLT_KvGet(kv, n, "piezo_v"));
    fputc(',', out);
    csv_field(out, CLT_KvGet(kv, n, "current_v"));
    fputc(',', out);
    csv_field(out, state);
    fputc('\n', out);
  }
  ret = reading;
  free(copy);
  return ret;
}

void
CLT_CsvFree(CLT_Csv *c)
{
  if (!c)
    return;
  for (int i = 0; i < c->n; i++) {
    free(c->lasers[i].laser);
    free(c->lasers[i].state);
  }
  free(c->lasers);
  free(c);
}
