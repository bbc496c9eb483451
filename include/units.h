/* units.h - optical frequency units and setpoint parsing (pure, no I/O).
 *
 * Internally frequencies are THz.  Vacuum wavelength uses the exact speed of
 * light: f[THz] = 299792.458 / lambda[nm]; wavenumber f[THz] = 0.0299792458 * k[cm-1].
 */
#ifndef WL_UNITS_H
#define WL_UNITS_H

#include <stddef.h>

#define UNI_C_M_PER_S 299792458.0

typedef enum { UNI_THZ = 0, UNI_GHZ, UNI_MHZ, UNI_NM, UNI_CM1 } UNI_Unit;

/* Parse a unit word, case-insensitive: THz GHz MHz nm cm-1 (also cm^-1, 1/cm).
   0 on success, -1 if unknown. */
int UNI_ParseUnit(const char *text, UNI_Unit *unit);

/* Name of a unit as printed ("THz", "GHz", "MHz", "nm", "cm-1"). */
const char *UNI_Name(UNI_Unit unit);

/* Convert a value in unit to THz; -1 if the result is not a finite positive
   frequency (e.g. 0 nm). */
int UNI_ToTHz(double value, UNI_Unit unit, double *thz);

/* Convert THz to unit (thz > 0). */
double UNI_FromTHz(double thz, UNI_Unit unit);

/* Parse a frequency written as a number with an optional unit, either glued
   ("384.23THz", "780.24nm") or as a separate word (unit_word, may be NULL).
   Default unit THz.  Returns 0 and *thz on success; -1 and a message in err
   on malformed text (a decimal comma has a message of its own), an unknown
   unit (checked before the number's value), or a non-positive/non-finite
   result. */
int UNI_ParseFrequency(const char *number, const char *unit_word, double *thz,
                       char *err, size_t errlen);

/* Parse a setpoint as typed at the protocol: as UNI_ParseFrequency, or, when
   the number has a leading sign, an offset from current_thz in the unit
   written (THz by default): for THz, GHz and MHz a frequency step; for nm
   and cm-1 a step in that unit (new = the frequency of current_thz expressed
   in the unit, plus the offset).  *relative (may be NULL) tells which. */
int UNI_ParseSetpoint(const char *number, const char *unit_word, double current_thz,
                      double *thz, int *relative, char *err, size_t errlen);

#endif
