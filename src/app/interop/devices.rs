//! Cameras and microphones: listing them and opening a capture stream.

use super::session::MediaFailure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{MediaDeviceInfo, MediaDeviceKind, MediaDevices, MediaStream, MediaStreamConstraints, MediaStreamTrack};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub label: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceList {
    pub cameras: Vec<Device>,
    pub microphones: Vec<Device>,
}

fn media_devices() -> Result<MediaDevices, MediaFailure> {
    web_sys::window().and_then(|w| w.navigator().media_devices().ok()).ok_or_else(|| MediaFailure {
        code: "NO_DEVICES".into(),
        message: "This browser cannot capture media (HTTPS is required)".into(),
    })
}

/// The cameras and microphones the page may use (labels appear once access was granted).
pub async fn list() -> Result<DeviceList, MediaFailure> {
    let promise = media_devices()?
        .enumerate_devices()
        .map_err(|e| MediaFailure { code: "NO_DEVICES".into(), message: format!("{e:?}") })?;
    let all = JsFuture::from(promise).await.map_err(|e| MediaFailure { code: "NO_DEVICES".into(), message: format!("{e:?}") })?;
    let mut list = DeviceList::default();
    for d in js_sys::Array::from(&all).iter() {
        let Ok(d) = d.dyn_into::<MediaDeviceInfo>() else { continue };
        let n = match d.kind() {
            MediaDeviceKind::Videoinput => list.cameras.len(),
            MediaDeviceKind::Audioinput => list.microphones.len(),
            _ => continue,
        } + 1;
        let fallback = if d.kind() == MediaDeviceKind::Videoinput { format!("Camera {n}") } else { format!("Microphone {n}") };
        let device = Device { id: d.device_id(), label: if d.label().is_empty() { fallback } else { d.label() } };
        match d.kind() {
            MediaDeviceKind::Videoinput => list.cameras.push(device),
            _ => list.microphones.push(device),
        }
    }
    Ok(list)
}

/// Opens the chosen camera and microphone at `height`p (16:9).
pub async fn open(camera: Option<&str>, microphone: Option<&str>, height: u32) -> Result<MediaStream, MediaFailure> {
    let width = height * 16 / 9;
    // Built as JS objects directly: no JSON machinery in the bundle for this.
    let obj = |pairs: &[(&str, JsValue)]| {
        let o = js_sys::Object::new();
        for (k, v) in pairs {
            let _ = js_sys::Reflect::set(&o, &JsValue::from_str(k), v);
        }
        JsValue::from(o)
    };
    let ideal = |n: u32| obj(&[("ideal", JsValue::from(n))]);
    let exact = |id: &str| obj(&[("exact", JsValue::from_str(id))]);
    let mut video = vec![("width", ideal(width)), ("height", ideal(height)), ("frameRate", ideal(30))];
    if let Some(id) = camera.filter(|id| !id.is_empty()) {
        video.push(("deviceId", exact(id)));
    }
    let mut audio = vec![("echoCancellation", JsValue::TRUE), ("noiseSuppression", JsValue::TRUE)];
    if let Some(id) = microphone.filter(|id| !id.is_empty()) {
        audio.push(("deviceId", exact(id)));
    }
    let constraints = obj(&[("video", obj(&video)), ("audio", obj(&audio))]);
    let constraints: MediaStreamConstraints = constraints.unchecked_into();
    let promise = media_devices()?
        .get_user_media_with_constraints(&constraints)
        .map_err(|e| MediaFailure { code: "NO_DEVICES".into(), message: format!("{e:?}") })?;
    let stream = JsFuture::from(promise).await.map_err(|e| {
        let name = js_sys::Reflect::get(&e, &"name".into()).ok().and_then(|n| n.as_string()).unwrap_or_default();
        let message = match name.as_str() {
            "NotAllowedError" => "Camera and microphone access was denied".to_string(),
            "NotFoundError" | "OverconstrainedError" => "The chosen camera or microphone is not available".to_string(),
            "NotReadableError" => "The camera or microphone is in use by another application".to_string(),
            _ => format!("Could not open the camera: {name}"),
        };
        MediaFailure { code: "NO_DEVICES".into(), message }
    })?;
    stream.dyn_into::<MediaStream>().map_err(|e| MediaFailure { code: "NO_DEVICES".into(), message: format!("{e:?}") })
}

/// Stops every track of `stream` (the camera light goes off).
pub fn stop(stream: &MediaStream) {
    for t in stream.get_tracks().iter() {
        if let Ok(t) = t.dyn_into::<MediaStreamTrack>() {
            t.stop();
        }
    }
}

/// The first track of `kind` ("video" or "audio").
pub fn track(stream: &MediaStream, kind: &str) -> Option<MediaStreamTrack> {
    stream.get_tracks().iter().filter_map(|t| t.dyn_into::<MediaStreamTrack>().ok()).find(|t| t.kind() == kind)
}
