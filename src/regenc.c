/* regenc.c - Modbus register encoding of actuator volts (pure, no I/O). */
#include <float.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include "regenc.h"

int
REG_Count(const REG_Encoding *enc)
{
  return enc->format == REG_F32 ? 2 : 1;
}

/* Round to nearest (halves away from zero) and clamp to lo..hi. */
static long
round_clamp(double raw, long lo, long hi)
{
  if (raw <= (double)lo)
    return lo;
  if (raw >= (double)hi)
    return hi;
  raw = round(raw);
  if (raw <= (double)lo)
    return lo;
  if (raw >= (double)hi)
    return hi;
  return (long)raw;
}

static void
put_f32(REG_WordOrder order, uint32_t u, uint16_t regs[2])
{
  unsigned a = (u >> 24) & 0xffu, b = (u >> 16) & 0xffu;
  unsigned c = (u >> 8) & 0xffu, d = u & 0xffu;

  switch (order) {
    case REG_CDAB:
      regs[0] = (uint16_t)(c << 8 | d);
      regs[1] = (uint16_t)(a << 8 | b);
      break;
    case REG_BADC:
      regs[0] = (uint16_t)(b << 8 | a);
      regs[1] = (uint16_t)(d << 8 | c);
      break;
    case REG_DCBA:
      regs[0] = (uint16_t)(d << 8 | c);
      regs[1] = (uint16_t)(b << 8 | a);
      break;
    case REG_ABCD:
    default:
      regs[0] = (uint16_t)(a << 8 | b);
      regs[1] = (uint16_t)(c << 8 | d);
      break;
  }
}

static uint32_t
get_f32(REG_WordOrder order, const uint16_t regs[2])
{
  unsigned r0 = regs[0], r1 = regs[1];
  unsigned a, b, c, d;

  switch (order) {
    case REG_CDAB:
      c = r0 >> 8; d = r0 & 0xffu; a = r1 >> 8; b = r1 & 0xffu;
      break;
    case REG_BADC:
      b = r0 >> 8; a = r0 & 0xffu; d = r1 >> 8; c = r1 & 0xffu;
      break;
    case REG_DCBA:
      d = r0 >> 8; c = r0 & 0xffu; b = r1 >> 8; a = r1 & 0xffu;
      break;
    case REG_ABCD:
    default:
      a = r0 >> 8; b = r0 & 0xffu; c = r1 >> 8; d = r1 & 0xffu;
      break;
  }
  return (uint32_t)a << 24 | (uint32_t)b << 16 | (uint32_t)c << 8 | (uint32_t)d;
}

int
REG_Encode(const REG_Encoding *enc, double volts, uint16_t regs[2])
{
  double raw;
  long r;
  float f;
  uint32_t u;

  if (!isfinite(volts))
    return -1;
  raw = enc->offset + enc->scale * volts;
  if (isnan(raw))
    return -1;

  switch (enc->format) {
    case REG_U16:
      r = round_clamp(raw, 0, 65535);
      regs[0] = (uint16_t)r;
      return 1;
    case REG_S16:
      r = round_clamp(raw, -32768, 32767);
      regs[0] = (uint16_t)(r < 0 ? r + 65536 : r);
      return 1;
    case REG_F32:
      if (raw > (double)FLT_MAX)
        raw = (double)FLT_MAX;
      else if (raw < -(double)FLT_MAX)
        raw = -(double)FLT_MAX;
      f = (float)raw;             /* IEEE round to nearest */
      memcpy(&u, &f, sizeof u);
      put_f32(enc->order, u, regs);
      return 2;
  }
  return -1;
}

/* Step the encoded value one register code up (dir > 0) or down in raw
   units; 0, or -1 at the end of the register's range. */
static int
step_raw(const REG_Encoding *enc, uint16_t regs[2], int dir)
{
  uint32_t u;
  float f;

  switch (enc->format) {
    case REG_U16:
      if ((dir > 0 && regs[0] == 65535u) || (dir < 0 && regs[0] == 0u))
        return -1;
      regs[0] = (uint16_t)(regs[0] + (dir > 0 ? 1 : -1));
      return 0;
    case REG_S16:
      if ((dir > 0 && regs[0] == 32767u) || (dir < 0 && regs[0] == 32768u))
        return -1;
      regs[0] = (uint16_t)(regs[0] + (dir > 0 ? 1 : -1));
      return 0;
    case REG_F32:
      u = get_f32(enc->order, regs);
      memcpy(&f, &u, sizeof f);
      f = nextafterf(f, dir > 0 ? FLT_MAX : -FLT_MAX);
      if (!isfinite(f))
        return -1;
      memcpy(&u, &f, sizeof u);
      put_f32(enc->order, u, regs);
      return 0;
  }
  return -1;
}

/* Decoded values this close to a limit count as on it: far below any
   converter's resolution, above the error of the division in REG_Decode. */
#define REG_LIMIT_EPS 1e-9

int
REG_EncodeWithin(const REG_Encoding *enc, double volts, double lo, double hi,
                 uint16_t regs[2], double *written)
{
  int n, dir;
  double v;

  if (!isfinite(volts) || !isfinite(lo) || !isfinite(hi) || lo > hi || enc->scale == 0.0)
    return -1;
  volts = volts < lo ? lo : volts > hi ? hi : volts;
  n = REG_Encode(enc, volts, regs);
  if (n < 0)
    return -1;
  v = REG_Decode(enc, regs);
  /* One step towards the inside: raw rises with volts when scale > 0. */
  for (int tries = 0; tries < 2; tries++) {
    if (v > hi + REG_LIMIT_EPS)
      dir = enc->scale > 0.0 ? -1 : 1;
    else if (v < lo - REG_LIMIT_EPS)
      dir = enc->scale > 0.0 ? 1 : -1;
    else
      break;
    if (step_raw(enc, regs, dir) != 0)
      return -1;
    v = REG_Decode(enc, regs);
  }
  if (!(v >= lo - REG_LIMIT_EPS && v <= hi + REG_LIMIT_EPS))
    return -1;                 /* no register code inside lo..hi */
  if (written)
    *written = v;
  return n;
}

double
REG_Decode(const REG_Encoding *enc, const uint16_t regs[2])
{
  double raw;
  uint32_t u;
  float f;

  switch (enc->format) {
    case REG_U16:
      raw = (double)regs[0];
      break;
    case REG_S16:
      raw = regs[0] >= 32768u ? (double)regs[0] - 65536.0 : (double)regs[0];
      break;
    case REG_F32:
      u = get_f32(enc->order, regs);
      memcpy(&f, &u, sizeof f);
      raw = (double)f;
      break;
    default:
      return (double)NAN;
  }
  if (enc->scale == 0.0)
    return (double)NAN;
  return (raw - enc->offset) / enc->scale;
}

int
REG_ParseFormat(const char *text, REG_Format *fmt)
{
  if (!text)
    return -1;
  if (strcasecmp(text, "u16") == 0)
    *fmt = REG_U16;
  else if (strcasecmp(text, "s16") == 0)
    *fmt = REG_S16;
  else if (strcasecmp(text, "f32") == 0)
    *fmt = REG_F32;
  else
    return -1;
  return 0;
}

int
REG_ParseWordOrder(const char *text, REG_WordOrder *order)
{
  if (!text)
    return -1;
  if (strcasecmp(text, "abcd") == 0)
    *order = REG_ABCD;
  else if (strcasecmp(text, "cdab") == 0)
    *order = REG_CDAB;
  else if (strcasecmp(text, "badc") == 0)
    *order = REG_BADC;
  else if (strcasecmp(text, "dcba") == 0)
    *order = REG_DCBA;
  else
    return -1;
  return 0;
}

const char *
REG_FormatName(REG_Format fmt)
{
  switch (fmt) {
    case REG_U16: return "u16";
    case REG_S16: return "s16";
    case REG_F32: return "f32";
  }
  return "?";
}

const char *
REG_WordOrderName(REG_WordOrder order)
{
  switch (order) {
    case REG_ABCD: return "abcd";
    case REG_CDAB: return "cdab";
    case REG_BADC: return "badc";
    case REG_DCBA: return "dcba";
  }
  return "?";
}
