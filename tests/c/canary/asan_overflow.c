/* Deliberate heap overflow: must be caught when ASan is really linked. */
#include <stdlib.h>
int main(int argc, char **argv) {
    (void)argv;
    volatile char *p = malloc(8);
    p[8 + argc - 1] = 1;
    free((void *)p);
    return 0;
}
