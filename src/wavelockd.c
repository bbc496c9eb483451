/* wavelockd.c - the wavelock daemon (being assembled). */
#include "config.h"

#include <stdio.h>

int
main(void)
{
  printf("wavelockd %s\n", PACKAGE_VERSION);
  return 0;
}
