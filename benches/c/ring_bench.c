/* SPDX-License-Identifier: MIT-0
 *
 * rte_ring MP/MC burst between two EAL lcores: the C twin of
 * benches/src/workload/ring.rs `mpmc_burst_ours`, loop for loop.
 *
 *   ring_bench <EAL args: -l P,C --main-lcore P ...> -- \
 *       [--items=N] [--burst=B] [--size=S]
 *
 * The main lcore (cpu P) is the producer: it fills a burst buffer with the
 * values next, next+1, ... and calls rte_ring_mp_enqueue_burst until all N
 * items are in, calling rte_pause() when nothing fitted. The worker lcore
 * (cpu C) calls rte_ring_mc_dequeue_burst until it has N items, summing
 * them (checked at the end), rte_pause() when the ring was empty. Both
 * first move a warm-up pass of 65536 items, then meet at a spin barrier
 * and run the timed pass. Items are 8 bytes (a uintptr_t in the void *
 * slot), the same size as the Rust side's u64.
 *
 * Prints one line:
 *   RESULT ops=N cycles=<wall TSC ticks> ns=<wall ns> side_cycles=<x>
 * where wall is from the earlier start to the later end (both read with
 * rte_rdtsc), and side_cycles is the producer's own cycles per item plus
 * the consumer's: the figure ring_perf_autotest prints for two cores.
 *
 * Built by scripts/bench-ring.sh:
 *   cc -O3 -march=native ring_bench.c $(pkg-config --cflags --libs libdpdk)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_pause.h>
#include <rte_ring.h>

#define MAX_BURST 256
#define WARMUP_ITEMS (1u << 16)

static struct rte_ring *ring;
static unsigned int burst = 32;

/* A spin barrier: both lcores leave within a cache-line transfer. */
static uint32_t arrived;

static void
barrier_wait(uint32_t round)
{
	__atomic_fetch_add(&arrived, 1, __ATOMIC_ACQ_REL);
	while (__atomic_load_n(&arrived, __ATOMIC_ACQUIRE) < 2 * (round + 1))
		rte_pause();
}

struct span {
	uint64_t c0, c1;
	struct timespec t0, t1;
	uint64_t sum;
};

static uint64_t
expected_sum(uint64_t n)
{
	return (n % 2 == 0) ? (n / 2) * (n - 1) : n * ((n - 1) / 2);
}

static void
produce(uint64_t n)
{
	void *buf[MAX_BURST];
	uint64_t next = 0;

	while (next < n) {
		unsigned int k = (n - next) < burst ? (unsigned int)(n - next) : burst;
		unsigned int i, done;

		for (i = 0; i < k; i++)
			buf[i] = (void *)(uintptr_t)(next + i);
		done = rte_ring_mp_enqueue_burst(ring, buf, k, NULL);
		if (done == 0)
			rte_pause();
		next += done;
	}
}

static uint64_t
consume(uint64_t n)
{
	void *buf[MAX_BURST];
	uint64_t got = 0, sum = 0;

	while (got < n) {
		unsigned int k = rte_ring_mc_dequeue_burst(ring, buf, burst, NULL);
		unsigned int i;

		if (k == 0)
			rte_pause();
		for (i = 0; i < k; i++)
			sum += (uint64_t)(uintptr_t)buf[i];
		got += k;
	}
	return sum;
}

static uint64_t items = 20000000;
static struct span cons_span;

static int
consumer_main(void *arg __rte_unused)
{
	barrier_wait(0);
	if (consume(WARMUP_ITEMS) != expected_sum(WARMUP_ITEMS))
		return -1;
	barrier_wait(1);
	clock_gettime(CLOCK_MONOTONIC, &cons_span.t0);
	cons_span.c0 = rte_rdtsc();
	cons_span.sum = consume(items);
	cons_span.c1 = rte_rdtsc();
	clock_gettime(CLOCK_MONOTONIC, &cons_span.t1);
	return 0;
}

static double
ns_between(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) * 1e9 + (double)(b->tv_nsec - a->tv_nsec);
}

static const struct timespec *
earlier(const struct timespec *a, const struct timespec *b)
{
	return (a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec <= b->tv_nsec)) ? a : b;
}

static const struct timespec *
later(const struct timespec *a, const struct timespec *b)
{
	return earlier(a, b) == a ? b : a;
}

int
main(int argc, char **argv)
{
	unsigned int size = 4096, worker;
	struct span prod;
	int ret, i;

	ret = rte_eal_init(argc, argv);
	if (ret < 0) {
		fprintf(stderr, "ring_bench: rte_eal_init failed\n");
		return 1;
	}
	for (i = ret + 1; i < argc; i++) {
		if (strncmp(argv[i], "--items=", 8) == 0)
			items = strtoull(argv[i] + 8, NULL, 10);
		else if (strncmp(argv[i], "--burst=", 8) == 0)
			burst = (unsigned int)strtoul(argv[i] + 8, NULL, 10);
		else if (strncmp(argv[i], "--size=", 7) == 0)
			size = (unsigned int)strtoul(argv[i] + 7, NULL, 10);
		else if (strcmp(argv[i], "--") != 0) {
			fprintf(stderr, "ring_bench: unknown argument %s\n", argv[i]);
			return 1;
		}
	}
	if (burst == 0 || burst > MAX_BURST || items == 0) {
		fprintf(stderr, "ring_bench: bad --burst or --items\n");
		return 1;
	}
	if (rte_lcore_count() < 2) {
		fprintf(stderr, "ring_bench: needs two lcores (-l P,C)\n");
		return 1;
	}
	/* Default flags: MP enqueue, MC dequeue (RTS/HTS off), as
	 * ring_perf_autotest. A count of `size` holds size - 1 items. */
	ring = rte_ring_create("bench", size, rte_socket_id(), 0);
	if (ring == NULL) {
		fprintf(stderr, "ring_bench: rte_ring_create: %s\n", rte_strerror(rte_errno));
		return 1;
	}

	worker = rte_get_next_lcore(rte_get_main_lcore(), 1, 0);
	rte_eal_remote_launch(consumer_main, NULL, worker);

	barrier_wait(0);
	produce(WARMUP_ITEMS);
	barrier_wait(1);
	clock_gettime(CLOCK_MONOTONIC, &prod.t0);
	prod.c0 = rte_rdtsc();
	produce(items);
	prod.c1 = rte_rdtsc();
	clock_gettime(CLOCK_MONOTONIC, &prod.t1);

	if (rte_eal_wait_lcore(worker) != 0) {
		fprintf(stderr, "ring_bench: warm-up sum mismatch\n");
		return 1;
	}
	if (cons_span.sum != expected_sum(items)) {
		fprintf(stderr, "ring_bench: sum mismatch\n");
		return 1;
	}

	{
		uint64_t c0 = RTE_MIN(prod.c0, cons_span.c0);
		uint64_t c1 = RTE_MAX(prod.c1, cons_span.c1);
		double side = (double)((prod.c1 - prod.c0) + (cons_span.c1 - cons_span.c0)) /
			      (double)items;
		double ns = ns_between(earlier(&prod.t0, &cons_span.t0),
				       later(&prod.t1, &cons_span.t1));

		printf("RESULT ops=%" PRIu64 " cycles=%" PRIu64 " ns=%.0f side_cycles=%.4f tsc_hz=%" PRIu64 "\n",
		       items, c1 - c0, ns, side, rte_get_tsc_hz());
	}
	rte_ring_free(ring);
	rte_eal_cleanup();
	return 0;
}
