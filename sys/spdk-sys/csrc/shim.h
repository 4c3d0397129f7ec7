/* What Rust cannot call through bindgen alone: SPDK's static inline
 * functions and macros, bitfields of the NVMe structures, and option
 * structures whose size SPDK checks (`opts_size`), each as a small real
 * function named `dp_spdk_*`.
 */
#ifndef DATAPLANE_SPDK_SHIM_H
#define DATAPLANE_SPDK_SHIM_H

#include <spdk/stdinc.h>
#include <spdk/version.h>
#include <spdk/env.h>
#include <spdk/nvme.h>

/* spdk_env_opts_init, then spdk_env_init: `name` for the process, `core`
 * the one core DPDK's main lcore is put on, `mem_size_mb` memory reserved
 * up front (negative: SPDK's default), no PCI access, no hugepages (TCP
 * only). */
int dp_spdk_env_init(const char *name, int core, int mem_size_mb, bool no_pci, bool no_huge);

/* spdk_nvme_cpl_is_error (a macro), and the status fields (bitfields). */
bool dp_spdk_cpl_is_error(const struct spdk_nvme_cpl *cpl);
uint8_t dp_spdk_cpl_sct(const struct spdk_nvme_cpl *cpl);
uint8_t dp_spdk_cpl_sc(const struct spdk_nvme_cpl *cpl);

/* spdk_nvme_trtype_is_fabrics (static inline). */
bool dp_spdk_trtype_is_fabrics(enum spdk_nvme_transport_type trtype);

/* spdk_nvme_ctrlr_get_default_io_qpair_opts, sized for `depth`
 * operations in flight, then spdk_nvme_ctrlr_alloc_io_qpair. */
struct spdk_nvme_qpair *dp_spdk_alloc_io_qpair(struct spdk_nvme_ctrlr *ctrlr, uint32_t depth);

/* The power-fail atomic write unit in blocks: NAWUPF + 1 when the
 * namespace reports its own (NSFEAT bit 1), else the controller's AWUPF
 * + 1 (bitfields of the identify data). */
uint32_t dp_spdk_ns_atomic_blocks(struct spdk_nvme_ns *ns);

/* Whether the controller has a volatile write cache (VWC.present). */
bool dp_spdk_ctrlr_volatile_cache(struct spdk_nvme_ctrlr *ctrlr);

/* Dataset Management with the deallocate attribute over one range (the
 * range structure has a union of bitfields). */
int dp_spdk_ns_cmd_deallocate(struct spdk_nvme_ns *ns, struct spdk_nvme_qpair *qpair,
			      uint64_t lba, uint32_t blocks, spdk_nvme_cmd_cb cb, void *arg);

#endif
