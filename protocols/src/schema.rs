//! PLACEHOLDER: JSON Schema cleaning for Gemini; written by the Gemini module's owner.
