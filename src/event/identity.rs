//! A visitor who logged in, as it travels through the hand-off.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AnonymousId, EventFields, InvalidEvent, ParseError, UserId};

/// A visitor who logged in: their anonymous id now belongs to the user. Travels through the
/// hand-off like an event, so that the writer attributes the visitor's stored events durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub anonymous_id: AnonymousId,
    pub user_id: UserId,
    /// When the service received the identification.
    #[serde(deserialize_with = "crate::rfc3339::deserialize")]
    pub identified_at: DateTime<Utc>,
}

impl Identity {
    /// Parses `{"anonymous_id": "...", "user_id": 42}`, both required (other fields are read
    /// and dropped, as in an event's body).
    pub fn from_json(body: &[u8], received_at: DateTime<Utc>) -> Result<Self, ParseError> {
        let fields: EventFields = serde_json::from_slice(body)?;
        let (user_id, anonymous_id) = fields.actor_fields();
        Ok(Self::from_fields(anonymous_id, user_id, received_at)?)
    }

    /// An identification from its two fields' values.
    pub fn from_fields(
        anonymous_id: Option<&Value>,
        user_id: Option<&Value>,
        received_at: DateTime<Utc>,
    ) -> Result<Self, InvalidEvent> {
        let anonymous_id = match anonymous_id {
            None | Some(Value::Null) => return Err(InvalidEvent::missing("anonymous_id")),
            Some(value) => AnonymousId::from_json(value)?,
        };
        Ok(Self {
            anonymous_id,
            user_id: UserId::from_json(user_id)?,
            identified_at: received_at,
        })
    }
}
