/* SPDX-License-Identifier: MIT-0
 *
 * rte_mempool get_bulk/put_bulk on one lcore: the C twin of
 * benches/src/workload/mempool.rs `get_put_loop`, loop for loop.
 *
 *   mempool_bench <EAL args: -l CPU ...> -- \
 *       [--iters=N] [--burst=B] [--cache=C] [--count=K]
 *
 * Creates a pool of K objects of 64 bytes (rte_mempool_create, default ops
 * "ring_mp_mc", per-lcore cache of C objects, 0 for none), runs 10000
 * warm-up iterations, then times N iterations of
 * rte_mempool_get_bulk(B) + rte_mempool_put_bulk(B) on the main lcore with
 * rte_rdtsc. One operation is one object.
 *
 * Prints one line:
 *   RESULT ops=N*B cycles=<TSC ticks> ns=<wall ns> side_cycles=-
 *
 * Built by scripts/bench-ring.sh:
 *   cc -O3 -march=native mempool_bench.c $(pkg-config --cflags --libs libdpdk)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mempool.h>

#define MAX_BURST 256
#define ELT_SIZE 64
#define WARMUP_ITERS 10000

static uintptr_t
get_put_loop(struct rte_mempool *mp, uint64_t iters, unsigned int burst)
{
	void *objs[MAX_BURST];
	uintptr_t acc = 0;
	uint64_t i;

	for (i = 0; i < iters; i++) {
		if (rte_mempool_get_bulk(mp, objs, burst) != 0) {
			fprintf(stderr, "mempool_bench: pool exhausted\n");
			exit(1);
		}
		acc += (uintptr_t)objs[0];
		rte_mempool_put_bulk(mp, objs, burst);
	}
	return acc;
}

int
main(int argc, char **argv)
{
	uint64_t iters = 4000000;
	unsigned int burst = 32, cache = 256, count = 8191;
	struct rte_mempool *mp;
	struct timespec t0, t1;
	uint64_t c0, c1;
	volatile uintptr_t sink;
	int ret, i;

	ret = rte_eal_init(argc, argv);
	if (ret < 0) {
		fprintf(stderr, "mempool_bench: rte_eal_init failed\n");
		return 1;
	}
	for (i = ret + 1; i < argc; i++) {
		if (strncmp(argv[i], "--iters=", 8) == 0)
			iters = strtoull(argv[i] + 8, NULL, 10);
		else if (strncmp(argv[i], "--burst=", 8) == 0)
			burst = (unsigned int)strtoul(argv[i] + 8, NULL, 10);
		else if (strncmp(argv[i], "--cache=", 8) == 0)
			cache = (unsigned int)strtoul(argv[i] + 8, NULL, 10);
		else if (strncmp(argv[i], "--count=", 8) == 0)
			count = (unsigned int)strtoul(argv[i] + 8, NULL, 10);
		else if (strcmp(argv[i], "--") != 0) {
			fprintf(stderr, "mempool_bench: unknown argument %s\n", argv[i]);
			return 1;
		}
	}
	if (burst == 0 || burst > MAX_BURST || iters == 0) {
		fprintf(stderr, "mempool_bench: bad --burst or --iters\n");
		return 1;
	}
	mp = rte_mempool_create("bench", count, ELT_SIZE, cache, 0, NULL, NULL, NULL, NULL,
				rte_socket_id(), 0);
	if (mp == NULL) {
		fprintf(stderr, "mempool_bench: rte_mempool_create: %s\n", rte_strerror(rte_errno));
		return 1;
	}

	sink = get_put_loop(mp, WARMUP_ITERS, burst);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	c0 = rte_rdtsc();
	sink = get_put_loop(mp, iters, burst);
	c1 = rte_rdtsc();
	clock_gettime(CLOCK_MONOTONIC, &t1);
	(void)sink;

	printf("RESULT ops=%" PRIu64 " cycles=%" PRIu64 " ns=%.0f side_cycles=- tsc_hz=%" PRIu64 "\n",
	       iters * burst, c1 - c0,
	       (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec),
	       rte_get_tsc_hz());
	rte_mempool_free(mp);
	rte_eal_cleanup();
	return 0;
}
