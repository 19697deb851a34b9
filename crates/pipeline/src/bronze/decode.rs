//! Bus messages to bronze rows: what the writer stores of an event (the conversion itself is
//! the bus's, [`bus::bronze`], which keeps the edge's events in bronze on the embedded bus).

use bus::Delivery;
use store::service::bronze::BronzeRow;

/// The bronze row of a delivered event, or why it is none.
pub(super) fn decode(delivery: &Delivery) -> Result<BronzeRow, String> {
    let envelope: protocol::Envelope = serde_json::from_slice(&delivery.message.payload)
        .map_err(|error| format!("not an event envelope: {error}"))?;
    if envelope.tenant_id != delivery.message.tenant {
        return Err("the envelope names another tenant than the bus message".into());
    }
    bus::bronze::row_of(&envelope)
}
