/* cmd_bench.h: `modula-engine bench` (worker/cmd_bench.c). */
#ifndef MODULA_CMD_BENCH_H
#define MODULA_CMD_BENCH_H

int cmd_bench(int argc, char **argv);

#endif
