#include "shim.h"

int
dp_spdk_env_init(const char *name, int core, int mem_size_mb, bool no_pci, bool no_huge)
{
	struct spdk_env_opts opts;
	char mask[32];

	opts.opts_size = sizeof(opts);
	spdk_env_opts_init(&opts);
	snprintf(mask, sizeof(mask), "[%d]", core);
	opts.name = name;
	opts.core_mask = mask;
	opts.shm_id = -1;
	if (mem_size_mb >= 0) {
		opts.mem_size = mem_size_mb;
	}
	opts.no_pci = no_pci;
	opts.no_huge = no_huge;
	return spdk_env_init(&opts);
}

bool
dp_spdk_cpl_is_error(const struct spdk_nvme_cpl *cpl)
{
	return spdk_nvme_cpl_is_error(cpl);
}

uint8_t
dp_spdk_cpl_sct(const struct spdk_nvme_cpl *cpl)
{
	return cpl->status.sct;
}

uint8_t
dp_spdk_cpl_sc(const struct spdk_nvme_cpl *cpl)
{
	return cpl->status.sc;
}

bool
dp_spdk_trtype_is_fabrics(enum spdk_nvme_transport_type trtype)
{
	return spdk_nvme_trtype_is_fabrics(trtype);
}

struct spdk_nvme_qpair *
dp_spdk_alloc_io_qpair(struct spdk_nvme_ctrlr *ctrlr, uint32_t depth)
{
	struct spdk_nvme_io_qpair_opts opts;

	spdk_nvme_ctrlr_get_default_io_qpair_opts(ctrlr, &opts, sizeof(opts));
	/* One slot of an NVMe queue is always empty; requests beyond the
	 * queue wait in SPDK's software queue, so leave room for both. */
	if (opts.io_queue_size < depth + 1) {
		opts.io_queue_size = depth + 1;
	}
	if (opts.io_queue_requests < 2 * depth) {
		opts.io_queue_requests = 2 * depth;
	}
	return spdk_nvme_ctrlr_alloc_io_qpair(ctrlr, &opts, sizeof(opts));
}

uint32_t
dp_spdk_ns_atomic_blocks(struct spdk_nvme_ns *ns)
{
	const struct spdk_nvme_ns_data *nsdata = spdk_nvme_ns_get_data(ns);
	const struct spdk_nvme_ctrlr_data *cdata =
		spdk_nvme_ctrlr_get_data(spdk_nvme_ns_get_ctrlr(ns));

	if (nsdata->nsfeat.ns_atomic_write_unit) {
		return (uint32_t)nsdata->nawupf + 1;
	}
	return (uint32_t)cdata->awupf + 1;
}

bool
dp_spdk_ctrlr_volatile_cache(struct spdk_nvme_ctrlr *ctrlr)
{
	return spdk_nvme_ctrlr_get_data(ctrlr)->vwc.present;
}

int
dp_spdk_ns_cmd_deallocate(struct spdk_nvme_ns *ns, struct spdk_nvme_qpair *qpair,
			  uint64_t lba, uint32_t blocks, spdk_nvme_cmd_cb cb, void *arg)
{
	/* SPDK copies the range into the command's payload. */
	struct spdk_nvme_dsm_range range = {
		.starting_lba = lba,
		.length = blocks,
	};

	return spdk_nvme_ns_cmd_dataset_management(ns, qpair, SPDK_NVME_DSM_ATTR_DEALLOCATE,
			&range, 1, cb, arg);
}
