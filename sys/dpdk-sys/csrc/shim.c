/* See shim.h. */
#include "shim.h"

struct rte_mbuf *dp_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

int dp_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
			  unsigned int count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void dp_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

uint16_t dp_pktmbuf_data_room_size(struct rte_mempool *mp)
{
	return rte_pktmbuf_data_room_size(mp);
}

unsigned int dp_lcore_id(void)
{
	return rte_lcore_id();
}

int dp_errno(void)
{
	return rte_errno;
}

unsigned int dp_mempool_size(const struct rte_mempool *mp)
{
	return mp->size;
}

const char *dp_mempool_name(const struct rte_mempool *mp)
{
	return mp->name;
}
