/* Deliberate signed overflow: must be caught when UBSan is really linked. */
#include <limits.h>
int main(int argc, char **argv) {
    (void)argv;
    volatile int x = INT_MAX;
    return (x + argc) == 0;
}
