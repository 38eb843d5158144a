/* Deliberate data race: must be caught when TSan is really linked. */
#include <pthread.h>
static int shared;
static void *bump(void *p) {
    (void)p;
    for (int i = 0; i < 1000; i++) shared++;
    return 0;
}
int main(void) {
    pthread_t a, b;
    pthread_create(&a, 0, bump, 0);
    pthread_create(&b, 0, bump, 0);
    pthread_join(a, 0);
    pthread_join(b, 0);
    return shared == 0;
}
