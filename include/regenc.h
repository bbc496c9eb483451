/* regenc.h - Modbus register encoding of actuator volts (pure, no I/O).
 *
 * raw = offset + scale * volts, rounded to nearest and clamped to the range
 * of the register type.  f32 values take two registers in one of four word
 * orders; A is the most significant byte of the IEEE-754 single:
 *   ABCD: reg[0] = A<<8|B, reg[1] = C<<8|D   (big-endian, "Modicon")
 *   CDAB: reg[0] = C<<8|D, reg[1] = A<<8|B   (word swap)
 *   BADC: reg[0] = B<<8|A, reg[1] = D<<8|C   (byte swap)
 *   DCBA: reg[0] = D<<8|C, reg[1] = B<<8|A   (little-endian)
 */
#ifndef WL_REGENC_H
#define WL_REGENC_H

#include <stddef.h>
#include <stdint.h>

typedef enum { REG_U16 = 0, REG_S16, REG_F32 } REG_Format;
typedef enum { REG_ABCD = 0, REG_CDAB, REG_BADC, REG_DCBA } REG_WordOrder;

typedef struct {
  REG_Format format;
  REG_WordOrder order;   /* f32 only */
  double scale;          /* raw units per volt */
  double offset;         /* raw units at 0 V */
} REG_Encoding;

/* Number of registers one value takes (1 or 2). */
int REG_Count(const REG_Encoding *enc);

/* Encode volts into regs[0..REG_Count-1]; returns the count, or -1 for a
   non-finite input (regs untouched). */
int REG_Encode(const REG_Encoding *enc, double volts, uint16_t regs[2]);

/* Encode volts clamped to lo..hi (lo <= hi) so that the value the registers
   decode to lies inside lo..hi too: where rounding to the nearest register
   code would land outside (9 V at max_v 9 V encoding as 9.0001 V), the next
   code towards the inside is taken.  The decoded value goes to *written
   (may be NULL).  Returns the count, or -1 (errno-free) for a non-finite
   input or limits no register code lies within. */
int REG_EncodeWithin(const REG_Encoding *enc, double volts, double lo, double hi,
                     uint16_t regs[2], double *written);

/* Decode registers back to volts (inverse of REG_Encode up to rounding). */
double REG_Decode(const REG_Encoding *enc, const uint16_t regs[2]);

/* Parse "u16"/"s16"/"f32" and "abcd"/"cdab"/"badc"/"dcba" (case-insensitive);
   0 on success, -1 if unknown. */
int REG_ParseFormat(const char *text, REG_Format *fmt);
int REG_ParseWordOrder(const char *text, REG_WordOrder *order);

/* Names for printing. */
const char *REG_FormatName(REG_Format fmt);
const char *REG_WordOrderName(REG_WordOrder order);

#endif
