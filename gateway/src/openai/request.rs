//! Parses a Chat Completions request body into what chatstream uses of it,
//! with an error naming the field at fault. Fields chatstream does not use
//! (sampling parameters, tools, `user`, ...) are accepted and ignored, so
//! SDKs that send them work unchanged.
use chatstream_schemas::pb::events::ContextMessage;
use serde_json::{Map, Value};

use super::error::OpenAiError;

/// What a Chat Completions request asks of chatstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest {
    pub model: String,
    /// The text of the last `user` message: the turn's user message.
    pub text: String,
    /// The messages before it, as text (every request is a fresh
    /// conversation, so this is all the model knows of earlier turns).
    pub context: Vec<ContextMessage>,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk carrying the usage.
    pub include_usage: bool,
}

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, OpenAiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| OpenAiError::invalid_json(&e))?;
    let Value::Object(body) = value else {
        return Err(OpenAiError::invalid_body(
            "the request body must be a JSON object",
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(OpenAiError::invalid_request("model", "`model` is required"));
        }
        Some(_) => return Err(wrong_type("model", "a string")),
    };
    let (context, text) = split_messages(body.get("messages"))?;
    let stream = optional_bool(&body, "stream")?.unwrap_or(false);
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => {
            if !stream {
                return Err(OpenAiError::invalid_request(
                    "stream_options",
                    "`stream_options` is only allowed when `stream` is true",
                ));
            }
            optional_bool(options, "include_usage")
                .map_err(|e| e.with_param("stream_options.include_usage"))?
                .unwrap_or(false)
        }
        Some(_) => return Err(wrong_type("stream_options", "an object")),
    };
    match body.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(OpenAiError::invalid_request(
                "n",
                "only `n` = 1 is supported: one choice per request",
            ));
        }
    }
    Ok(ChatRequest {
        model,
        text,
        context,
        stream,
        include_usage,
    })
}

/// Validates every message; returns the ones before the last `user` one
/// as context, and that one's text.
fn split_messages(messages: Option<&Value>) -> Result<(Vec<ContextMessage>, String), OpenAiError> {
    let messages = match messages {
        Some(Value::Array(messages)) => messages,
        None | Some(Value::Null) => {
            return Err(OpenAiError::invalid_request(
                "messages",
                "`messages` is required",
            ));
        }
        Some(_) => return Err(wrong_type("messages", "an array")),
    };
    let mut turn = None;
    for (index, message) in messages.iter().enumerate() {
        let param = format!("messages[{index}]");
        let Value::Object(message) = message else {
            return Err(wrong_type(&param, "an object"));
        };
        let role = match message.get("role") {
            Some(Value::String(role)) if ROLES.contains(&role.as_str()) => role.as_str(),
            Some(Value::String(role)) => {
                return Err(OpenAiError::invalid_request(
                    format!("{param}.role"),
                    format!(
                        "unknown role {role:?}; expected one of {}",
                        ROLES.join(", ")
                    ),
                ));
            }
            None => {
                return Err(OpenAiError::invalid_request(
                    format!("{param}.role"),
                    format!("`{param}.role` is required"),
                ));
            }
            Some(_) => return Err(wrong_type(&format!("{param}.role"), "a string")),
        };
        let content = message.get("content");
        check_content_shape(content, &param)?;
        if role == "user" {
            turn = Some((index, content));
        }
    }
    let Some((turn_index, content)) = turn else {
        return Err(OpenAiError::invalid_request(
            "messages",
            "`messages` must contain a message with role \"user\"",
        ));
    };
    let mut context = Vec::with_capacity(turn_index);
    for (index, message) in messages[..turn_index].iter().enumerate() {
        if let Some(message) = context_message(message, index)? {
            context.push(message);
        }
    }
    let text = text_of(content, &format!("messages[{turn_index}].content"))?;
    Ok((context, text))
}

/// An earlier message as the model will see it. Without a tool protocol
/// between client and model, a tool result is shown as text from the user
/// and an assistant's tool calls as text; a message with nothing to show
/// is left out.
fn context_message(message: &Value, index: usize) -> Result<Option<ContextMessage>, OpenAiError> {
    let role = message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("user");
    let param = format!("messages[{index}].content");
    let content = message.get("content");
    let mut text = match content {
        None | Some(Value::Null) => String::new(),
        Some(content) => text_of(Some(content), &param)?,
    };
    if role == "assistant"
        && let Some(Value::Array(calls)) = message.get("tool_calls")
    {
        for call in calls {
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
            let arguments = function
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str);
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&format!(
                "[tool call] {} {}",
                name.unwrap_or_default(),
                arguments.unwrap_or("{}")
            ));
        }
    }
    if text.is_empty() {
        return Ok(None);
    }
    let (role, text) = match role {
        "system" | "developer" => ("system", text),
        "assistant" => ("assistant", text),
        "tool" | "function" => ("user", format!("[tool result] {text}")),
        _ => ("user", text),
    };
    Ok(Some(ContextMessage {
        role: role.into(),
        text,
    }))
}

/// `content` is a string, an array of parts, or null (assistant and tool
/// messages may omit it).
fn check_content_shape(content: Option<&Value>, message_param: &str) -> Result<(), OpenAiError> {
    let param = format!("{message_param}.content");
    match content {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => {
            for (index, part) in parts.iter().enumerate() {
                let is_typed_object = part
                    .as_object()
                    .is_some_and(|part| part.get("type").is_some_and(Value::is_string));
                if !is_typed_object {
                    return Err(wrong_type(
                        &format!("{param}[{index}]"),
                        "an object with a string `type`",
                    ));
                }
            }
            Ok(())
        }
        Some(_) => Err(wrong_type(&param, "a string or an array of content parts")),
    }
}

/// The text of the turn's message: its string, or its text parts joined
/// by newlines. Other parts (images, audio, files) are refused rather than
/// silently dropped, since the answer would ignore them.
fn text_of(content: Option<&Value>, param: &str) -> Result<String, OpenAiError> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (index, part) in parts.iter().enumerate() {
                let part_param = format!("{param}[{index}]");
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(text))) => texts.push(text.as_str()),
                    (Some("text"), _) => {
                        return Err(wrong_type(&format!("{part_param}.text"), "a string"));
                    }
                    (kind, _) => {
                        return Err(OpenAiError::invalid_request(
                            format!("{part_param}.type"),
                            format!(
                                "content parts of type {:?} are not supported; send text",
                                kind.unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        None | Some(_) => Err(OpenAiError::invalid_request(
            param,
            "the user message needs text `content`",
        )),
    }
}

fn optional_bool(object: &Map<String, Value>, field: &str) -> Result<Option<bool>, OpenAiError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(_) => Err(wrong_type(field, "a boolean")),
    }
}

fn wrong_type(param: &str, expected: &str) -> OpenAiError {
    OpenAiError::invalid_request(param, format!("`{param}` must be {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ChatRequest, OpenAiError> {
        parse_chat_request(body.as_bytes())
    }

    fn param_of(body: &str) -> Option<String> {
        let error = parse(body).unwrap_err();
        assert_eq!(
            error.status,
            axum::http::StatusCode::BAD_REQUEST,
            "{error:?}"
        );
        error.param
    }

    #[test]
    fn the_last_user_message_is_the_turn() {
        let request = parse(
            r#"{"model":"mock","temperature":0.2,"messages":[
                {"role":"system","content":"be brief"},
                {"role":"user","content":"first"},
                {"role":"assistant","content":null},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            request,
            ChatRequest {
                model: "mock".into(),
                text: "a\nb".into(),
                context: vec![
                    ContextMessage {
                        role: "system".into(),
                        text: "be brief".into()
                    },
                    ContextMessage {
                        role: "user".into(),
                        text: "first".into()
                    },
                ],
                stream: false,
                include_usage: false,
            }
        );
    }

    #[test]
    fn earlier_tool_calls_and_results_become_text() {
        let request = parse(
            r#"{"model":"mock","messages":[
                {"role":"user","content":"time?"},
                {"role":"assistant","content":null,"tool_calls":[
                    {"id":"c1","type":"function","function":{"name":"now","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"12:00"},
                {"role":"assistant","content":"It is noon."},
                {"role":"user","content":"thanks"}
            ]}"#,
        )
        .unwrap();
        let shown: Vec<_> = request
            .context
            .iter()
            .map(|m| format!("{}: {}", m.role, m.text))
            .collect();
        assert_eq!(
            shown,
            [
                "user: time?",
                "assistant: [tool call] now {}",
                "user: [tool result] 12:00",
                "assistant: It is noon."
            ]
        );
        assert_eq!(request.text, "thanks");
    }

    #[test]
    fn streaming_options() {
        let request = parse(
            r#"{"model":"mock","stream":true,"stream_options":{"include_usage":true},
                "messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert!(request.stream && request.include_usage);
        assert_eq!(
            param_of(
                r#"{"model":"mock","stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#
            ),
            Some("stream_options".into())
        );
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let cases = [
            (r#"{"messages":[{"role":"user","content":"hi"}]}"#, "model"),
            (r#"{"model":7,"messages":[]}"#, "model"),
            (r#"{"model":"mock"}"#, "messages"),
            (r#"{"model":"mock","messages":"hi"}"#, "messages"),
            (r#"{"model":"mock","messages":[]}"#, "messages"),
            (
                r#"{"model":"mock","messages":[{"role":"system","content":"x"}]}"#,
                "messages",
            ),
            (
                r#"{"model":"mock","messages":[{"content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"mock","messages":[{"role":"robot","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"mock","messages":[{"role":"user","content":5}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"mock","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                r#"{"model":"mock","stream":"yes","messages":[{"role":"user","content":"x"}]}"#,
                "stream",
            ),
            (
                r#"{"model":"mock","n":2,"messages":[{"role":"user","content":"x"}]}"#,
                "n",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(param_of(body).as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn broken_json_and_non_objects() {
        let error = parse("{\"model\":").unwrap_err();
        assert_eq!(error.code, "invalid_json");
        let error = parse("[1]").unwrap_err();
        assert_eq!(error.code, "invalid_request");
    }
}
