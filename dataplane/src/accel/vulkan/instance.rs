//! The loader, the instance, the debug messenger, and device discovery.

use super::vk_err;
use crate::Error;
use crate::backend::Probe;
use crate::require::Capability;
use ash::vk;
use serde::Serialize;
use std::ffi::{CStr, c_void};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The newest Vulkan version we ask for; 1.1 is the least we take (for
/// `vkGetPhysicalDeviceProperties2` and external memory).
const API_WANTED: u32 = vk::API_VERSION_1_3;

/// `Error::Required` for Vulkan with `reason`: the shape every "cannot run
/// here" takes, so that `Auto` can fall back with the reason.
pub(super) fn unavailable(reason: impl Into<String>) -> Error {
    Error::Required {
        capability: Capability::Vulkan.name(),
        reason: reason.into(),
    }
}

/// The loaded loader and a Vulkan instance, with a debug messenger when the
/// loader offers `VK_EXT_debug_utils`. Destroyed in reverse on drop.
pub(crate) struct Instance {
    pub(super) instance: ash::Instance,
    debug: Option<(ash::ext::debug_utils::Instance, vk::DebugUtilsMessengerEXT)>,
    pub(super) api_version: u32,
    // Last: the loader stays loaded until the instance is gone.
    entry: ash::Entry,
}

impl Instance {
    /// Loads the loader (`loader`, else `$DATAPLANE_VULKAN_LOADER`, else
    /// `libvulkan.so.1`) and creates an instance.
    pub(crate) fn new(loader: Option<&Path>) -> crate::Result<Instance> {
        let from_env = std::env::var_os(super::super::LOADER_ENV);
        let path = loader.map(Path::as_os_str).or(from_env.as_deref());
        let name = path.map_or_else(
            || "libvulkan.so.1".to_owned(),
            |p| p.to_string_lossy().into_owned(),
        );
        let entry = match path {
            // SAFETY: loading runs the library's initialisers; the library is
            // a Vulkan loader named by the configuration or the environment,
            // which is trusted as the system's loader is.
            Some(p) => unsafe { ash::Entry::load_from(p) },
            // SAFETY: as above, for the system's Vulkan loader.
            None => unsafe { ash::Entry::load() },
        }
        .map_err(|e| unavailable(format!("the Vulkan loader {name} is not loadable: {e}")))?;

        // SAFETY: a global command of a loaded entry, no arguments.
        let version = unsafe { entry.try_enumerate_instance_version() }
            .map_err(vk_err("vkEnumerateInstanceVersion"))?
            .unwrap_or(vk::API_VERSION_1_0);
        if version < vk::API_VERSION_1_1 {
            return Err(unavailable(format!(
                "the Vulkan loader {name} offers instance version {}; 1.1 is needed",
                version_string(version)
            )));
        }
        // SAFETY: a global command of a loaded entry; `None` asks for the
        // implementation's own extensions.
        let extensions = unsafe { entry.enumerate_instance_extension_properties(None) }
            .map_err(vk_err("vkEnumerateInstanceExtensionProperties"))?;
        let debug_utils = extensions
            .iter()
            .any(|e| e.extension_name_as_c_str() == Ok(ash::ext::debug_utils::NAME));
        let enabled: Vec<*const std::ffi::c_char> = if debug_utils {
            vec![ash::ext::debug_utils::NAME.as_ptr()]
        } else {
            Vec::new()
        };
        let api_version = version.min(API_WANTED);
        let app = vk::ApplicationInfo::default()
            .application_name(c"dataplane")
            .engine_name(c"dataplane")
            .api_version(api_version);
        let create = vk::InstanceCreateInfo::default()
            .application_info(&app)
            .enabled_extension_names(&enabled);
        // SAFETY: `create` and what it points to live across the call.
        let instance = match unsafe { entry.create_instance(&create, None) } {
            Ok(i) => i,
            Err(vk::Result::ERROR_INCOMPATIBLE_DRIVER) => {
                return Err(unavailable(format!(
                    "the Vulkan loader {name} found no driver (VK_ERROR_INCOMPATIBLE_DRIVER; \
                     VK_ICD_FILENAMES={:?}, VK_DRIVER_FILES={:?}); install a driver, e.g. \
                     mesa-vulkan-drivers for lavapipe",
                    std::env::var("VK_ICD_FILENAMES").unwrap_or_default(),
                    std::env::var("VK_DRIVER_FILES").unwrap_or_default(),
                )));
            }
            Err(e) => return Err(vk_err("vkCreateInstance")(e)),
        };
        let mut me = Instance {
            instance,
            debug: None,
            api_version,
            entry,
        };
        if debug_utils {
            let loader = ash::ext::debug_utils::Instance::new(&me.entry, &me.instance);
            let info = vk::DebugUtilsMessengerCreateInfoEXT::default()
                .message_severity(
                    vk::DebugUtilsMessageSeverityFlagsEXT::WARNING
                        | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
                )
                .message_type(
                    vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                        | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                        | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
                )
                .pfn_user_callback(Some(on_debug_message));
            // SAFETY: the instance was created with VK_EXT_debug_utils; the
            // callback is a plain function that outlives the messenger.
            let messenger = unsafe { loader.create_debug_utils_messenger(&info, None) }
                .map_err(vk_err("vkCreateDebugUtilsMessengerEXT"))?;
            me.debug = Some((loader, messenger));
        }
        Ok(me)
    }

    /// Sends one message through the debug messenger (for the test that the
    /// messenger catches what the validation layer would say).
    #[cfg(test)]
    pub(crate) fn submit_debug_message(&self, text: &CStr) -> bool {
        let Some((loader, _)) = &self.debug else {
            return false;
        };
        let data = vk::DebugUtilsMessengerCallbackDataEXT::default().message(text);
        // SAFETY: `data` lives across the call; the messenger exists.
        unsafe {
            loader.submit_debug_utils_message(
                vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
                vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION,
                &data,
            );
        }
        true
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some((loader, messenger)) = self.debug.take() {
            // SAFETY: created from this instance, destroyed once, before it.
            unsafe { loader.destroy_debug_utils_messenger(messenger, None) };
        }
        // SAFETY: every child object (device, messenger) is destroyed by now:
        // a Gpu owns its Instance and destroys its device first.
        unsafe { self.instance.destroy_instance(None) };
    }
}

// --------------------------------------------------------- debug messages

static VALIDATION_MESSAGES: AtomicU64 = AtomicU64::new(0);
static FIRST_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Messages kept for [`debug_messages`].
const KEPT_MESSAGES: usize = 16;

/// Warnings and errors that validation layers (or the driver) reported
/// through the debug messenger of any Vulkan instance of this process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DebugMessages {
    /// Validation or performance warnings and errors.
    pub count: u64,
    /// The first few, as the layer wrote them.
    pub first: Vec<String>,
}

/// The validation messages so far. Run with
/// `VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation` and check that `count`
/// stays 0: the accelerator tests do.
pub fn debug_messages() -> DebugMessages {
    DebugMessages {
        // Relaxed: a counter read after the calls that bump it returned.
        count: VALIDATION_MESSAGES.load(Ordering::Relaxed),
        first: FIRST_MESSAGES.lock().map(|v| v.clone()).unwrap_or_default(),
    }
}

unsafe extern "system" fn on_debug_message(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    kind: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    _user: *mut c_void,
) -> vk::Bool32 {
    // SAFETY: the loader passes a valid pointer (or null) for the duration
    // of the call.
    let data = unsafe { data.as_ref() };
    // SAFETY: `message` is null or a NUL-terminated string the loader keeps
    // for the duration of the call.
    let text = data.and_then(|d| unsafe { d.message_as_c_str() });
    let text = text.map_or_else(|| "(no message)".into(), CStr::to_string_lossy);
    let level = if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR) {
        "error"
    } else {
        "warning"
    };
    let what = if kind.contains(vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION) {
        "validation"
    } else if kind.contains(vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE) {
        "performance"
    } else {
        "general"
    };
    if kind.intersects(
        vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
            | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
    ) {
        // Relaxed: a counter; nothing is published through it.
        VALIDATION_MESSAGES.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut kept) = FIRST_MESSAGES.lock()
            && kept.len() < KEPT_MESSAGES
        {
            kept.push(format!("{what} {level}: {text}"));
        }
        tracing::error!("vulkan {what} {level}: {text}");
    } else {
        tracing::warn!("vulkan {what} {level}: {text}");
    }
    vk::FALSE
}

// --------------------------------------------------------------- discovery

/// The kind of a Vulkan physical device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    /// A discrete GPU.
    Discrete,
    /// A GPU on the CPU's die.
    Integrated,
    /// A virtual GPU.
    Virtual,
    /// A CPU implementation (lavapipe, SwiftShader).
    Cpu,
    /// Anything else.
    Other,
}

impl DeviceType {
    fn from_vk(t: vk::PhysicalDeviceType) -> Self {
        match t {
            vk::PhysicalDeviceType::DISCRETE_GPU => DeviceType::Discrete,
            vk::PhysicalDeviceType::INTEGRATED_GPU => DeviceType::Integrated,
            vk::PhysicalDeviceType::VIRTUAL_GPU => DeviceType::Virtual,
            vk::PhysicalDeviceType::CPU => DeviceType::Cpu,
            _ => DeviceType::Other,
        }
    }

    /// Preference under `DeviceSelector::Auto`: lower first.
    pub(super) fn rank(self) -> u8 {
        match self {
            DeviceType::Discrete => 0,
            DeviceType::Integrated => 1,
            DeviceType::Virtual => 2,
            DeviceType::Cpu => 3,
            DeviceType::Other => 4,
        }
    }
}

/// One queue family of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueFamilyInfo {
    /// Its index.
    pub index: u32,
    /// Queues in it.
    pub count: u32,
    /// Compute capable.
    pub compute: bool,
    /// Graphics capable.
    pub graphics: bool,
    /// Transfer capable.
    pub transfer: bool,
}

/// One memory heap of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeapInfo {
    /// Bytes.
    pub size: u64,
    /// Device-local (VRAM on a discrete GPU).
    pub device_local: bool,
}

/// One Vulkan physical device, as discovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// Its index in the discovery (what `DeviceSelector::Index` takes).
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub device_type: DeviceType,
    /// The Vulkan version it supports.
    pub api_version: String,
    /// The driver's name and version string, when the device says (Vulkan
    /// 1.2).
    pub driver: Option<String>,
    /// PCI vendor id.
    pub vendor_id: u32,
    /// PCI device id.
    pub device_id: u32,
    /// Its PCI address (`0000:af:00.0`), with `VK_EXT_pci_bus_info`.
    pub pci_address: Option<String>,
    /// Its queue families.
    pub queue_families: Vec<QueueFamilyInfo>,
    /// Its memory heaps.
    pub memory_heaps: Vec<HeapInfo>,
    /// `VK_EXT_external_memory_host`: the alignment an imported host
    /// pointer and size need (`minImportedHostPointerAlignment`); `None`
    /// without the extension.
    pub external_memory_host_alignment: Option<u64>,
    /// Timeline semaphores (Vulkan 1.2).
    pub timeline_semaphores: bool,
    /// `maxComputeWorkGroupCount[0]`.
    pub max_workgroups: u32,
    /// `maxStorageBufferRange`: the largest window of a region one
    /// submission can read in place.
    pub max_storage_buffer_range: u32,
    /// The subgroup size (Vulkan 1.1).
    pub subgroup_size: u32,
    /// Whether a queue can be opened on it, and why (not).
    pub usable: Probe,
}

impl DeviceInfo {
    /// Queues of compute-capable families.
    pub fn compute_queues(&self) -> u32 {
        self.queue_families
            .iter()
            .filter(|f| f.compute)
            .map(|f| f.count)
            .sum()
    }

    /// One line: name, type, version, queues and features.
    pub fn summary(&self) -> String {
        let import = match self.external_memory_host_alignment {
            Some(a) => format!("external_memory_host (alignment {a})"),
            None => "no external_memory_host".into(),
        };
        let sync = if self.timeline_semaphores {
            "timeline semaphores"
        } else {
            "fences only"
        };
        format!(
            "{} [{:?}, Vulkan {}, {} compute queue(s), {import}, {sync}]",
            self.name,
            self.device_type,
            self.api_version,
            self.compute_queues()
        )
    }
}

/// What the Vulkan loader offers here: for `dp-info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    /// Whether the loader loaded and an instance could be created, and why
    /// (not).
    pub loader: Probe,
    /// The instance version, when the loader loaded.
    pub instance_version: Option<String>,
    /// Every physical device.
    pub devices: Vec<DeviceInfo>,
}

/// Enumerates every Vulkan physical device with what the accelerator
/// backend cares about. Never fails: a missing loader or driver is reported
/// in [`Discovery::loader`].
pub fn discover() -> Discovery {
    discover_with(None)
}

pub(super) fn discover_with(loader: Option<&Path>) -> Discovery {
    let instance = match Instance::new(loader) {
        Ok(i) => i,
        Err(e) => {
            let reason = match e {
                Error::Required { reason, .. } => reason,
                other => other.to_string(),
            };
            return Discovery {
                loader: Probe::unavailable(reason),
                instance_version: None,
                devices: Vec::new(),
            };
        }
    };
    let version = version_string(instance.api_version);
    match physical_devices(&instance) {
        Ok(list) => Discovery {
            loader: Probe::ok(format!("Vulkan {version} instance created")),
            instance_version: Some(version),
            devices: list.into_iter().map(|(_, info)| info).collect(),
        },
        Err(e) => Discovery {
            loader: Probe::unavailable(e.to_string()),
            instance_version: Some(version),
            devices: Vec::new(),
        },
    }
}

/// Every physical device with its handle.
pub(super) fn physical_devices(
    inst: &Instance,
) -> crate::Result<Vec<(vk::PhysicalDevice, DeviceInfo)>> {
    // SAFETY: a valid instance.
    let handles = unsafe { inst.instance.enumerate_physical_devices() }
        .map_err(vk_err("vkEnumeratePhysicalDevices"))?;
    handles
        .into_iter()
        .enumerate()
        .map(|(index, pd)| Ok((pd, describe(inst, pd, index)?)))
        .collect()
}

fn has_extension(list: &[vk::ExtensionProperties], name: &CStr) -> bool {
    list.iter().any(|e| e.extension_name_as_c_str() == Ok(name))
}

fn describe(inst: &Instance, pd: vk::PhysicalDevice, index: usize) -> crate::Result<DeviceInfo> {
    let i = &inst.instance;
    // SAFETY: `pd` was enumerated from this instance.
    let props = unsafe { i.get_physical_device_properties(pd) };
    // SAFETY: as above.
    let extensions = unsafe { i.enumerate_device_extension_properties(pd) }
        .map_err(vk_err("vkEnumerateDeviceExtensionProperties"))?;
    let has_host = has_extension(&extensions, ash::ext::external_memory_host::NAME);
    let has_pci = has_extension(&extensions, ash::ext::pci_bus_info::NAME);
    let v12 = props.api_version >= vk::API_VERSION_1_2 && inst.api_version >= vk::API_VERSION_1_2;

    let mut host = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
    let mut pci = vk::PhysicalDevicePCIBusInfoPropertiesEXT::default();
    let mut driver = vk::PhysicalDeviceDriverProperties::default();
    let mut subgroup = vk::PhysicalDeviceSubgroupProperties::default();
    let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut subgroup);
    if has_host {
        props2 = props2.push_next(&mut host);
    }
    if has_pci {
        props2 = props2.push_next(&mut pci);
    }
    if v12 {
        props2 = props2.push_next(&mut driver);
    }
    // SAFETY: every chained struct is one the device supports (checked
    // above) and lives across the call.
    unsafe { i.get_physical_device_properties2(pd, &mut props2) };

    let mut timeline = vk::PhysicalDeviceTimelineSemaphoreFeatures::default();
    if v12 {
        let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut timeline);
        // SAFETY: the chain is valid for a Vulkan 1.2 device.
        unsafe { i.get_physical_device_features2(pd, &mut f2) };
    }
    // SAFETY: `pd` was enumerated from this instance.
    let families = unsafe { i.get_physical_device_queue_family_properties(pd) };
    // SAFETY: as above.
    let memory = unsafe { i.get_physical_device_memory_properties(pd) };

    let queue_families: Vec<QueueFamilyInfo> = families
        .iter()
        .enumerate()
        .map(|(k, f)| QueueFamilyInfo {
            index: k as u32,
            count: f.queue_count,
            compute: f.queue_flags.contains(vk::QueueFlags::COMPUTE),
            graphics: f.queue_flags.contains(vk::QueueFlags::GRAPHICS),
            transfer: f.queue_flags.contains(vk::QueueFlags::TRANSFER),
        })
        .collect();
    let memory_heaps = memory
        .memory_heaps_as_slice()
        .iter()
        .map(|h| HeapInfo {
            size: h.size,
            device_local: h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL),
        })
        .collect();
    let name = props
        .device_name_as_c_str()
        .map_or_else(|_| "(unnamed)".into(), |c| c.to_string_lossy().into_owned());
    let driver = v12.then(|| {
        let n = driver
            .driver_name_as_c_str()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        let info = driver
            .driver_info_as_c_str()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{n} {info}").trim().to_owned()
    });
    let usable = if props.api_version < vk::API_VERSION_1_1 {
        Probe::unavailable(format!(
            "Vulkan {}; 1.1 is needed",
            version_string(props.api_version)
        ))
    } else if !queue_families.iter().any(|f| f.compute && f.count > 0) {
        Probe::unavailable("no compute queue family")
    } else {
        Probe::ok("has a compute queue")
    };
    Ok(DeviceInfo {
        index,
        name,
        device_type: DeviceType::from_vk(props.device_type),
        api_version: version_string(props.api_version),
        driver,
        vendor_id: props.vendor_id,
        device_id: props.device_id,
        pci_address: has_pci.then(|| {
            format!(
                "{:04x}:{:02x}:{:02x}.{:x}",
                pci.pci_domain, pci.pci_bus, pci.pci_device, pci.pci_function
            )
        }),
        queue_families,
        memory_heaps,
        external_memory_host_alignment: has_host
            .then_some(host.min_imported_host_pointer_alignment),
        timeline_semaphores: v12 && timeline.timeline_semaphore == vk::TRUE,
        max_workgroups: props.limits.max_compute_work_group_count[0],
        max_storage_buffer_range: props.limits.max_storage_buffer_range,
        subgroup_size: subgroup.subgroup_size,
        usable,
    })
}

/// "1.3.230".
pub(super) fn version_string(v: u32) -> String {
    format!(
        "{}.{}.{}",
        vk::api_version_major(v),
        vk::api_version_minor(v),
        vk::api_version_patch(v)
    )
}

/// The Vulkan probe: a usable device, listing every device found.
pub(crate) fn probe(d: &Discovery) -> Probe {
    if !d.loader.available {
        return d.loader.clone();
    }
    if d.devices.is_empty() {
        return Probe::unavailable(format!(
            "{}, but it has no physical devices",
            d.loader.reason
        ));
    }
    let list: Vec<String> = d.devices.iter().map(DeviceInfo::summary).collect();
    if d.devices.iter().any(|x| x.usable.available) {
        Probe::ok(list.join("; "))
    } else {
        Probe::unavailable(format!("no usable device: {}", list.join("; ")))
    }
}
