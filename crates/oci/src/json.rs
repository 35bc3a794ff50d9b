use serde::{Deserialize, Deserializer, Serialize};

/// Go writes nil slices and maps as `null`; read those as empty.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The one JSON writer for blobs strata creates: compact, object keys sorted at every depth, no
/// trailing newline. Going through `serde_json::Value` (a `BTreeMap` without the
/// `preserve_order` feature) is what sorts the keys, so struct field order never matters.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&serde_json::to_value(value)?)
}

/// Sorted keys, indented: for files people read (`index.json` is both).
pub fn canonical_json_pretty<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec_pretty(&serde_json::to_value(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Unsorted {
        zeta: u8,
        alpha: u8,
    }

    #[test]
    fn keys_are_sorted_and_output_compact() {
        let out = canonical_json(&Unsorted { zeta: 1, alpha: 2 }).unwrap();
        assert_eq!(out, br#"{"alpha":2,"zeta":1}"#);
    }
}
