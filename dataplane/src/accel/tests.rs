use super::*;

#[test]
fn configs_are_checked() {
    for bad in [
        QueueConfig {
            depth: 0,
            ..QueueConfig::default()
        },
        QueueConfig {
            max_items: 0,
            ..QueueConfig::default()
        },
        QueueConfig {
            staging_bytes: 0,
            ..QueueConfig::default()
        },
    ] {
        assert!(matches!(
            Queue::<Vec<Vec<u8>>>::open(bad),
            Err(Error::Config(_))
        ));
    }
    assert_eq!(
        "Vulkan".parse::<BackendChoice>().ok(),
        Some(BackendChoice::Named(BackendKind::Vulkan))
    );
    assert_eq!(
        " cpu".parse::<BackendChoice>().ok(),
        Some(BackendChoice::Named(BackendKind::Cpu))
    );
    assert!("gpu".parse::<BackendChoice>().is_err());
}

#[test]
fn submissions_are_checked_alike() {
    assert!(check_submission(64, 1, 64, 10).is_ok());
    assert!(check_submission(0, 0, 64, 10).is_ok());
    assert!(matches!(
        check_submission(65, 2, 64, 10),
        Err(SubmitError::TooManyItems { items: 65, max: 64 })
    ));
    assert!(matches!(
        check_submission(65, 1, 100, 10),
        Err(SubmitError::Workgroups { needed: 2, .. })
    ));
    assert!(matches!(
        check_submission(1, 11, 100, 10),
        Err(SubmitError::Workgroups { max: 10, .. })
    ));
    assert_eq!(workgroups_for(0), 0);
    assert_eq!(workgroups_for(64), 1);
    assert_eq!(workgroups_for(65), 2);
}

#[test]
fn kernel_lists() {
    assert!(Kernels::new(&[]).is_none());
    assert!(Kernels::new(&[Kernel::Crc32c; MAX_KERNELS + 1]).is_none());
    let k = Kernels::new(&[Kernel::Ipv4Update, Kernel::RssHash]).expect("two");
    assert_eq!(k.as_slice(), &[Kernel::Ipv4Update, Kernel::RssHash]);
    assert_eq!(format!("{k:?}"), "[Ipv4Update, RssHash]");
}

#[test]
fn the_cpu_backend_runs_every_kernel_in_order() {
    let mut q = Queue::<Vec<Vec<u8>>>::open(QueueConfig {
        depth: 2,
        ..QueueConfig::new(BackendChoice::Named(BackendKind::Cpu))
    })
    .expect("cpu");
    assert_eq!(q.info().backend, BackendKind::Cpu);
    let items = vec![b"123456789".to_vec(), Vec::new()];
    let k = Kernels::new(&[Kernel::Crc32c, Kernel::Ipv4Verify]).expect("two");
    q.submit(k, Buffers::new(items.clone()), 1, 1)
        .expect("room");
    q.submit(Kernel::Crc32c, Buffers::new(items.clone()), 1, 2)
        .expect("room");
    let full = q
        .submit(Kernel::Crc32c, Buffers::new(items), 1, 3)
        .expect_err("depth 2");
    assert_eq!(full.reason, SubmitError::Full(2));
    assert_eq!(full.buffers.items.len(), 2);
    let mut done = Vec::new();
    assert_eq!(q.poll(&mut done), 2);
    assert_eq!(done[0].tag, 1);
    assert_eq!(
        done[0].buffers.results,
        [0xe306_9283, 0, NOT_IPV4, NOT_IPV4]
    );
    assert_eq!(done[1].buffers.results, [0xe306_9283, 0]);
    assert_eq!(done[0].path, BufferPath::Host);
    assert_eq!(q.in_flight(), 0);
    assert_eq!(q.stats().completed, 2);
}

#[test]
fn a_missing_loader_falls_back_with_the_reason() {
    let config = |require| QueueConfig {
        loader: Some("/nonexistent/libvulkan.so.1".into()),
        require_vulkan: Some(require),
        ..QueueConfig::default()
    };
    let q = Queue::<Vec<Vec<u8>>>::open(config(false)).expect("falls back");
    assert_eq!(q.info().backend, BackendKind::Cpu);
    let reason = q.info().fallback.clone().expect("a reason");
    assert!(reason.contains("/nonexistent/libvulkan.so.1"), "{reason}");
    match Queue::<Vec<Vec<u8>>>::open(config(true)) {
        Err(Error::Required { capability, reason }) => {
            assert_eq!(capability, "vulkan");
            assert!(reason.contains("not loadable"), "{reason}");
        }
        other => panic!("expected Required, got {other:?}"),
    }
}
