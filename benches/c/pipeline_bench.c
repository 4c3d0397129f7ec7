/*
 * The DPDK twin of `l2fwd --workers 1`: an rx/tx lcore and a worker lcore
 * linked by two rte_rings (single producer, single consumer), as DPDK's
 * pipeline-style examples link theirs. The rx/tx lcore receives bursts
 * from both ports, marks each mbuf with its port, enqueues them to the
 * worker, dequeues what the worker returns and sends each packet on the
 * other port (l2fwd's pairing); the worker rewrites the MAC addresses for
 * that port (l2fwd's rewrite) and enqueues the burst back. What a full ring or port
 * refuses is freed and counted, as ours does.
 *
 *   pipeline_bench SECONDS [EAL args...]
 *   pipeline_bench 2 -l 0,1 --no-pci --in-memory --vdev net_null0 --vdev net_null1
 *
 * Prints one JSON line: packets received, sent, dropped, and Mpps.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#define BURST 32
#define RING_SIZE 1024
#define NB_DESC 1024

static struct rte_ring *to_worker, *from_worker;
static volatile int quit;
static uint64_t worker_dropped;

static int worker(void *arg)
{
    (void)arg;
    struct rte_mbuf *pkts[BURST];
    static const struct rte_ether_addr dst[2] = {{{2, 0, 0, 0, 0, 1}}, {{2, 0, 0, 0, 0, 0}}};
    struct rte_ether_addr src[2];
    rte_eth_macaddr_get(1, &src[0]);
    rte_eth_macaddr_get(0, &src[1]);
    while (!quit) {
        unsigned n = rte_ring_dequeue_burst(to_worker, (void **)pkts, BURST, NULL);
        if (n == 0)
            continue;
        for (unsigned i = 0; i < n; i++) {
            struct rte_ether_hdr *eth = rte_pktmbuf_mtod(pkts[i], struct rte_ether_hdr *);
            uint16_t in = pkts[i]->port & 1;
            rte_ether_addr_copy(&dst[in], &eth->dst_addr);
            rte_ether_addr_copy(&src[in], &eth->src_addr);
        }
        unsigned sent = rte_ring_enqueue_burst(from_worker, (void **)pkts, n, NULL);
        if (sent < n) {
            rte_pktmbuf_free_bulk(&pkts[sent], n - sent);
            worker_dropped += n - sent;
        }
    }
    return 0;
}

static int port_init(uint16_t port, struct rte_mempool *pool)
{
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof(conf));
    if (rte_eth_dev_configure(port, 1, 1, &conf) < 0)
        return -1;
    if (rte_eth_rx_queue_setup(port, 0, NB_DESC, rte_eth_dev_socket_id(port), NULL, pool) < 0)
        return -1;
    if (rte_eth_tx_queue_setup(port, 0, NB_DESC, rte_eth_dev_socket_id(port), NULL) < 0)
        return -1;
    return rte_eth_dev_start(port);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SECONDS [EAL args]\n", argv[0]);
        return 2;
    }
    double secs = atof(argv[1]);
    argv[1] = argv[0];
    int used = rte_eal_init(argc - 1, argv + 1);
    if (used < 0) {
        fprintf(stderr, "pipeline_bench: rte_eal_init failed\n");
        return 1;
    }
    if (rte_eth_dev_count_avail() < 2) {
        fprintf(stderr, "pipeline_bench: two ports needed\n");
        return 1;
    }
    struct rte_mempool *pool = rte_pktmbuf_pool_create("pipeline", 16383, 256, 0,
                                                       RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
    to_worker = rte_ring_create("to_worker", RING_SIZE, rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
    from_worker = rte_ring_create("from_worker", RING_SIZE, rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!pool || !to_worker || !from_worker || port_init(0, pool) || port_init(1, pool)) {
        fprintf(stderr, "pipeline_bench: set-up failed\n");
        return 1;
    }
    unsigned wl = rte_get_next_lcore(-1, 1, 0);
    if (wl >= RTE_MAX_LCORE) {
        fprintf(stderr, "pipeline_bench: a second lcore is needed (-l 0,1)\n");
        return 1;
    }
    rte_eal_remote_launch(worker, NULL, wl);

    struct rte_mbuf *pkts[BURST];
    struct rte_mbuf *out[2][BURST];
    uint64_t rx = 0, tx = 0, dropped = 0;
    uint64_t end = rte_get_tsc_cycles() + (uint64_t)(secs * rte_get_tsc_hz());
    uint64_t start = rte_get_tsc_cycles();
    while (rte_get_tsc_cycles() < end) {
        unsigned n = rte_ring_dequeue_burst(from_worker, (void **)pkts, BURST, NULL);
        if (n) {
            unsigned k[2] = {0, 0};
            for (unsigned i = 0; i < n; i++) {
                uint16_t d = (pkts[i]->port & 1) ^ 1;
                out[d][k[d]++] = pkts[i];
            }
            for (uint16_t d = 0; d < 2; d++) {
                if (!k[d])
                    continue;
                uint16_t sent = rte_eth_tx_burst(d, 0, out[d], k[d]);
                tx += sent;
                if (sent < k[d]) {
                    rte_pktmbuf_free_bulk(&out[d][sent], k[d] - sent);
                    dropped += k[d] - sent;
                }
            }
        }
        for (uint16_t p = 0; p < 2; p++) {
            n = rte_eth_rx_burst(p, 0, pkts, BURST);
            if (!n)
                continue;
            rx += n;
            for (unsigned i = 0; i < n; i++)
                pkts[i]->port = p;
            unsigned q = rte_ring_enqueue_burst(to_worker, (void **)pkts, n, NULL);
            if (q < n) {
                rte_pktmbuf_free_bulk(&pkts[q], n - q);
                dropped += n - q;
            }
        }
    }
    double elapsed = (double)(rte_get_tsc_cycles() - start) / rte_get_tsc_hz();
    quit = 1;
    rte_eal_mp_wait_lcore();
    printf("{\"rx_packets\":%" PRIu64 ",\"tx_packets\":%" PRIu64 ",\"dropped\":%" PRIu64
           ",\"rx_mpps\":%.3f,\"tx_mpps\":%.3f,\"duration_s\":%.3f}\n",
           rx, tx, dropped + worker_dropped, rx / elapsed / 1e6, tx / elapsed / 1e6, elapsed);
    rte_eth_dev_stop(0);
    rte_eth_dev_stop(1);
    rte_eal_cleanup();
    return 0;
}
