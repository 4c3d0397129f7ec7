/* DPDK's static inline functions as real functions that Rust can call
 * (bindgen cannot link to an inline function), and the few fields of
 * opaque structures the framework reads. Each is a one-line forward to the
 * DPDK function of the same name without the `dp_` prefix. The rx/tx burst
 * functions are not here: src/burst.rs has them in Rust, so that they
 * inline into the caller's loop.
 */
#ifndef DATAPLANE_DPDK_SHIM_H
#define DATAPLANE_DPDK_SHIM_H

#include <stdint.h>

#include <rte_config.h>
#include <rte_version.h>
#include <rte_eal.h>
#include <rte_interrupts.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_memory.h>
#include <rte_dev.h>
#include <rte_ether.h>
#include <rte_ethdev.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>

/* rte_pktmbuf_alloc */
struct rte_mbuf *dp_pktmbuf_alloc(struct rte_mempool *mp);
/* rte_pktmbuf_alloc_bulk */
int dp_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
			  unsigned int count);
/* rte_pktmbuf_free */
void dp_pktmbuf_free(struct rte_mbuf *m);
/* rte_pktmbuf_data_room_size */
uint16_t dp_pktmbuf_data_room_size(struct rte_mempool *mp);
/* rte_lcore_id */
unsigned int dp_lcore_id(void);
/* rte_errno (a thread-local variable) */
int dp_errno(void);
/* mp->size: the number of objects of a mempool */
unsigned int dp_mempool_size(const struct rte_mempool *mp);
/* mp->name */
const char *dp_mempool_name(const struct rte_mempool *mp);

#endif
