"""A stdio MCP server whose tool list changes, for the list_changed test.

It starts with one tool, `add_tool`. Calling `add_tool` with a `name`
registers a tool of that name (it echoes its `text`) and, unless `notify`
is false, sends `notifications/tools/list_changed`. Adding quietly lets a
test see that the client really serves its cached list until told.

Built on the low-level `Server` of the official `mcp` package, so that the
handshake can advertise `tools.listChanged`.
"""

import anyio
from mcp import types
from mcp.server import NotificationOptions, Server
from mcp.server.stdio import stdio_server

ADD_TOOL = types.Tool(
    name="add_tool",
    description="Adds a tool named `name`; says so unless `notify` is false.",
    input_schema={
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "notify": {"type": "boolean", "default": True},
        },
        "required": ["name"],
    },
)


def echo_tool(name: str) -> types.Tool:
    return types.Tool(
        name=name,
        description=f"Echoes `text` (added at run time as {name!r}).",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
    )


def text_result(text: str, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], is_error=is_error
    )


def create_server() -> Server:
    tools: dict[str, types.Tool] = {ADD_TOOL.name: ADD_TOOL}

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=list(tools.values()))

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        if params.name == ADD_TOOL.name:
            name = arguments.get("name")
            if not isinstance(name, str) or not name or name in tools:
                return text_result(f"cannot add a tool named {name!r}", is_error=True)
            tools[name] = echo_tool(name)
            if arguments.get("notify", True):
                await ctx.session.send_tool_list_changed()
            return text_result(f"added {name}")
        if params.name in tools:
            return text_result(str(arguments.get("text", "")))
        return text_result(f"unknown tool {params.name!r}", is_error=True)

    return Server("dynamic-tools", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    server = create_server()
    options = server.create_initialization_options(NotificationOptions(tools_changed=True))
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, options)


if __name__ == "__main__":
    anyio.run(main)
