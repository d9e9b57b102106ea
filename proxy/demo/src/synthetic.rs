//! `synthetic`: N generated tools plus a cheap `echo`, for benchmarks and throughput tests.
//!
//! Tool `i` is named `{prefix}tool_{i:04}`. Its description, title and input schema are drawn
//! deterministically from a small catalogue of business systems and actions, so a list of a
//! thousand tools looks (and tokenizes) like a real one. Even-numbered tools are read-only,
//! odd-numbered tools write. Every generated tool answers with its arguments echoed as JSON text.
//!
//! `echo` ({"message": string}) answers with the message as text. It is served on a fast path
//! that avoids the tool router and any schema work, so throughput tests measure the transport
//! and the portal, not this server.

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
        Tool, ToolAnnotations,
    },
    service::RequestContext,
};
use serde_json::{Value, json};

/// Name of the cheap echo tool (never prefixed, so throughput tests can always find it).
pub const ECHO: &str = "echo";

/// Business systems the generated tools pretend to belong to: (singular, plural, system).
const DOMAINS: &[(&str, &str, &str)] = &[
    ("invoice", "invoices", "billing"),
    ("customer", "customers", "CRM"),
    ("shipment", "shipments", "logistics"),
    ("incident", "incidents", "on-call"),
    ("pull request", "pull requests", "code review"),
    ("calendar event", "calendar events", "scheduling"),
    ("support ticket", "support tickets", "helpdesk"),
    ("feature flag", "feature flags", "release management"),
    ("purchase order", "purchase orders", "procurement"),
    ("employee record", "employee records", "HR"),
    ("dashboard", "dashboards", "analytics"),
    ("contract", "contracts", "legal"),
];

/// Read actions: (title verb, description template, schema kind).
const READ_ACTIONS: &[(&str, &str, Shape)] = &[
    (
        "Look up",
        "Look up a single {noun} in the {system} system by its id and return its current fields.",
        Shape::Id,
    ),
    (
        "Search",
        "Search {plural} in the {system} system by free-text query. Returns at most `limit` \
         matches, newest first.",
        Shape::Query,
    ),
    (
        "List changed",
        "List {plural} changed since an ISO-8601 timestamp, for incremental sync with the {system} \
         system.",
        Shape::Since,
    ),
    (
        "Summarize",
        "Summarize {plural} in the {system} system grouped by status for a reporting period.",
        Shape::Period,
    ),
];

/// Write actions: (title verb, description template, schema kind, destructive).
const WRITE_ACTIONS: &[(&str, &str, Shape, bool)] = &[
    (
        "Create",
        "Create a new {noun} in the {system} system. Returns the id of the created {noun}.",
        Shape::Create,
        false,
    ),
    (
        "Update status of",
        "Update the status of an existing {noun} in the {system} system.",
        Shape::Status,
        false,
    ),
    (
        "Comment on",
        "Add a comment to a {noun} in the {system} system; the comment is visible to everyone with \
         access to it.",
        Shape::Comment,
        false,
    ),
    (
        "Archive",
        "Archive a {noun} in the {system} system. Archived {plural} are hidden from lists until \
         restored.",
        Shape::Archive,
        true,
    ),
];

/// The small input-schema shapes the generated tools use.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Id,
    Query,
    Since,
    Period,
    Create,
    Status,
    Comment,
    Archive,
}

impl Shape {
    fn schema(self, noun: &str) -> JsonObject {
        let id = json!({"type": "string", "description": format!("Id of the {noun}")});
        let value = match self {
            Shape::Id => json!({"properties": {"id": id}, "required": ["id"]}),
            Shape::Query => json!({
                "properties": {
                    "query": {"type": "string", "description": "Free-text search query"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100,
                              "description": "Maximum number of results (default 20)"}
                },
                "required": ["query"]
            }),
            Shape::Since => json!({
                "properties": {
                    "since": {"type": "string", "format": "date-time",
                              "description": "Only return changes after this instant"},
                    "page_size": {"type": "integer", "minimum": 1, "maximum": 500}
                },
                "required": ["since"]
            }),
            Shape::Period => json!({
                "properties": {
                    "period": {"type": "string", "enum": ["day", "week", "month"],
                               "description": "Reporting period"}
                },
                "required": ["period"]
            }),
            Shape::Create => json!({
                "properties": {
                    "name": {"type": "string", "description": format!("Name of the new {noun}")},
                    "notes": {"type": "string", "description": "Optional free-text notes"}
                },
                "required": ["name"]
            }),
            Shape::Status => json!({
                "properties": {
                    "id": id,
                    "status": {"type": "string", "enum": ["active", "on_hold", "closed"]}
                },
                "required": ["id", "status"]
            }),
            Shape::Comment => json!({
                "properties": {
                    "id": id,
                    "comment": {"type": "string", "description": "Comment text (Markdown)"}
                },
                "required": ["id", "comment"]
            }),
            Shape::Archive => json!({
                "properties": {
                    "id": id,
                    "reason": {"type": "string", "description": "Why it is archived"}
                },
                "required": ["id"]
            }),
        };
        let mut schema = JsonObject::new();
        schema.insert("type".into(), Value::from("object"));
        if let Value::Object(rest) = value {
            schema.extend(rest);
        }
        schema
    }
}

/// The definition of generated tool number `index`.
pub fn generated_tool(prefix: &str, index: usize) -> Tool {
    let (noun, plural, system) = DOMAINS[(index / 2) % DOMAINS.len()];
    let round = index / (2 * DOMAINS.len());
    let fill = |template: &str| {
        template
            .replace("{noun}", noun)
            .replace("{plural}", plural)
            .replace("{system}", system)
    };
    let name = format!("{prefix}tool_{index:04}");
    if index.is_multiple_of(2) {
        let (verb, template, shape) = READ_ACTIONS[round % READ_ACTIONS.len()];
        let title = format!(
            "{verb} {}",
            if matches!(shape, Shape::Id) {
                noun
            } else {
                plural
            }
        );
        Tool::new(name, fill(template), shape.schema(noun))
            .with_title(title.clone())
            .with_annotations(
                ToolAnnotations::with_title(title)
                    .read_only(true)
                    .destructive(false)
                    .idempotent(true)
                    .open_world(false),
            )
    } else {
        let (verb, template, shape, destructive) = WRITE_ACTIONS[round % WRITE_ACTIONS.len()];
        let title = format!("{verb} {noun}");
        Tool::new(name, fill(template), shape.schema(noun))
            .with_title(title.clone())
            .with_annotations(
                ToolAnnotations::with_title(title)
                    .read_only(false)
                    .destructive(destructive)
                    .idempotent(matches!(shape, Shape::Status))
                    .open_world(false),
            )
    }
}

/// The definition of the `echo` tool.
pub fn echo_tool() -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {"message": {"type": "string", "description": "Text to send back"}},
        "required": ["message"]
    });
    let Value::Object(schema) = schema else {
        unreachable!("a JSON object literal")
    };
    Tool::new(ECHO, "Return the given message unchanged, as text.", schema)
        .with_title("Echo")
        .with_annotations(
            ToolAnnotations::with_title("Echo")
                .read_only(true)
                .destructive(false)
                .idempotent(true)
                .open_world(false),
        )
}

struct Catalogue {
    /// Generated tools in index order, then `echo`.
    tools: Vec<Tool>,
    by_name: HashMap<Cow<'static, str>, usize>,
}

/// The `synthetic` MCP server. Cheap to clone: all clones share one catalogue.
#[derive(Clone)]
pub struct SyntheticServer {
    catalogue: Arc<Catalogue>,
}

impl SyntheticServer {
    pub fn new(tools: usize, prefix: &str) -> Self {
        let tools: Vec<Tool> = (0..tools)
            .map(|index| generated_tool(prefix, index))
            .chain(std::iter::once(echo_tool()))
            .collect();
        let by_name = tools
            .iter()
            .enumerate()
            .map(|(index, tool)| (tool.name.clone(), index))
            .collect();
        Self {
            catalogue: Arc::new(Catalogue { tools, by_name }),
        }
    }

    /// Every tool, generated ones first, `echo` last.
    #[cfg(test)]
    pub fn tools(&self) -> &[Tool] {
        &self.catalogue.tools
    }

    /// Answer one `tools/call` without any framework routing.
    pub fn call(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, McpError> {
        if name == ECHO {
            return Ok(
                match arguments.as_ref().and_then(|args| args.get("message")) {
                    Some(Value::String(message)) => {
                        CallToolResult::success(vec![ContentBlock::text(message.clone())])
                    }
                    _ => CallToolResult::error(vec![ContentBlock::text(
                        "echo needs a string argument \"message\"",
                    )]),
                },
            );
        }
        if !self.catalogue.by_name.contains_key(name) {
            return Err(McpError::invalid_params(
                format!("unknown tool {name:?}"),
                None,
            ));
        }
        let arguments = Value::Object(arguments.unwrap_or_default());
        Ok(CallToolResult::success(vec![ContentBlock::text(
            arguments.to_string(),
        )]))
    }
}

impl ServerHandler for SyntheticServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("portcullis-demo-synthetic", env!("CARGO_PKG_VERSION"))
                .with_title("Portcullis synthetic benchmark server"),
        )
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.call(&request.name, request.arguments).map(Into::into)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(
            self.catalogue.tools.clone(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        let index = *self.catalogue.by_name.get(name)?;
        Some(self.catalogue.tools[index].clone())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rmcp::model::CallToolRequestParams;
    use serde_json::json;

    use super::*;
    use crate::test_support::*;

    fn valid_tool_name(name: &str) -> bool {
        (1..=128).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    }

    #[test]
    fn generates_n_tools_then_echo_with_alternating_read_only_hints() {
        let server = SyntheticServer::new(20, "");
        let tools = server.tools();
        assert_eq!(tools.len(), 21);
        assert_eq!(tools[0].name, "tool_0000");
        assert_eq!(tools[19].name, "tool_0019");
        assert_eq!(tools[20].name, ECHO);
        for (index, tool) in tools[..20].iter().enumerate() {
            let annotations = tool.annotations.as_ref().expect("annotations");
            assert_eq!(
                annotations.read_only_hint,
                Some(index % 2 == 0),
                "{}",
                tool.name
            );
            assert_eq!(annotations.open_world_hint, Some(false));
            assert!(annotations.title.is_some());
            assert_eq!(tool.input_schema.get("type"), Some(&json!("object")));
        }
        let echo = tools[20].annotations.as_ref().expect("annotations");
        assert_eq!(echo.read_only_hint, Some(true));
    }

    #[test]
    fn a_thousand_tools_have_valid_unique_names_and_varied_descriptions() {
        let server = SyntheticServer::new(1000, "");
        let tools = server.tools();
        let names: HashSet<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
        assert_eq!(names.len(), 1001);
        assert!(names.iter().all(|name| valid_tool_name(name)));
        let descriptions: HashSet<&str> = tools
            .iter()
            .filter_map(|tool| tool.description.as_deref())
            .collect();
        assert!(
            descriptions.len() >= 90,
            "only {} distinct descriptions",
            descriptions.len()
        );
        // Deterministic: a second catalogue is identical.
        assert_eq!(SyntheticServer::new(1000, "").tools(), tools);
    }

    #[test]
    fn the_name_prefix_applies_to_generated_tools_but_not_to_echo() {
        let server = SyntheticServer::new(2, "crm_");
        let names: Vec<&str> = server
            .tools()
            .iter()
            .map(|tool| tool.name.as_ref())
            .collect();
        assert_eq!(names, ["crm_tool_0000", "crm_tool_0001", "echo"]);
    }

    #[tokio::test]
    async fn echo_returns_the_message_as_text() {
        let client = connect(SyntheticServer::new(0, "")).await;
        let result = call(&client, "echo", json!({"message": "ping 🛰"})).await;
        assert_eq!(result.is_error, Some(false));
        assert_eq!(text(&result), "ping 🛰");
        let missing = call(&client, "echo", json!({})).await;
        assert_eq!(missing.is_error, Some(true));
    }

    #[tokio::test]
    async fn generated_tools_echo_their_arguments_as_json_text() {
        let client = connect(SyntheticServer::new(5, "")).await;
        let arguments = json!({"id": "INV-7", "limit": 3});
        let result = call(&client, "tool_0003", arguments.clone()).await;
        assert_eq!(result.is_error, Some(false));
        let echoed: Value = serde_json::from_str(text(&result)).expect("JSON text");
        assert_eq!(echoed, arguments);
    }

    #[tokio::test]
    async fn listing_over_the_protocol_returns_the_whole_catalogue() {
        let client = connect(SyntheticServer::new(50, "")).await;
        let tools = client.list_all_tools().await.expect("tools/list");
        assert_eq!(tools.len(), 51);
    }

    #[tokio::test]
    async fn an_unknown_tool_is_a_protocol_error() {
        let client = connect(SyntheticServer::new(1, "")).await;
        let result = client
            .call_tool(CallToolRequestParams::new("tool_0001"))
            .await;
        assert!(result.is_err());
    }
}
