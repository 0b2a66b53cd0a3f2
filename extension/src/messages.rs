//! The one closed set of messages between the worker, the offscreen document and the pages.
//! The records they carry are the pipeline's (`chalkstream_pipeline::broadcast`), re-exported
//! here.

use serde::{Deserialize, Serialize};

pub use chalkstream_pipeline::broadcast::*;

/// Which context a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipient {
    Worker,
    Offscreen,
}

/// Every message any context sends. Each context matches all variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Msg {
    /// Popup -> worker: stream this tab.
    StartTab { tab_id: i32 },
    /// Popup -> worker: stream the camera (permission already granted by the page).
    StartCamera,
    /// Popup -> worker: stop the broadcast.
    Stop,
    /// Offscreen -> worker: loaded; answer with the broadcast to run, if any.
    OffscreenReady,
    /// Offscreen -> worker: the broadcast is over (ended or failed).
    Finished { status: Status },
    /// Worker -> offscreen: run this broadcast.
    Begin { broadcast: Broadcast },
    /// Worker -> offscreen: stop recording, send what is left, end the stream.
    End,
    /// Popup -> offscreen: report the health.
    GetStatus,
    /// Offscreen -> worker: recording started; `copied` when the viewer link is on the clipboard.
    Live { copied: bool },
    /// Worker -> offscreen: put the viewer link on the clipboard (answers whether it did).
    CopyLink,
    /// Popup -> offscreen: mix the microphone in, or take it out.
    SetMic { on: bool },
    /// Popup -> offscreen: silence the microphone, or let it be heard again.
    SetMuted { muted: bool },
}

impl Msg {
    pub fn recipient(&self) -> Recipient {
        match self {
            Msg::StartTab { .. }
            | Msg::StartCamera
            | Msg::Stop
            | Msg::OffscreenReady
            | Msg::Finished { .. }
            | Msg::Live { .. } => Recipient::Worker,
            Msg::Begin { .. }
            | Msg::End
            | Msg::GetStatus
            | Msg::CopyLink
            | Msg::SetMic { .. }
            | Msg::SetMuted { .. } => Recipient::Offscreen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_by_type() {
        let v = serde_json::to_value(Msg::StartTab { tab_id: 4 }).unwrap();
        assert_eq!(v, serde_json::json!({"type": "StartTab", "tab_id": 4}));
        let m: Msg =
            serde_json::from_value(serde_json::json!({"type": "End", "to": "offscreen"})).unwrap();
        assert_eq!(m, Msg::End);
        assert!(serde_json::from_value::<Msg>(serde_json::json!({"type": "Reboot"})).is_err());
        assert_eq!(Msg::GetStatus.recipient(), Recipient::Offscreen);
        assert_eq!(Msg::Stop.recipient(), Recipient::Worker);
    }

    #[test]
    fn panel_messages_name_their_recipient() {
        let v = serde_json::to_value(Msg::SetMic { on: true }).unwrap();
        assert_eq!(v, serde_json::json!({"type": "SetMic", "on": true}));
        assert_eq!(Msg::CopyLink.recipient(), Recipient::Offscreen);
        assert_eq!(Msg::Live { copied: true }.recipient(), Recipient::Worker);
    }
}
