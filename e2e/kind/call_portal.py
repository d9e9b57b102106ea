"""Lists the portal's tools with the official Python MCP client (both eras) and calls one."""

import asyncio
import sys

from mcp import Client


async def main(url: str) -> None:
    for mode in ("legacy", "2026-07-28"):
        async with Client(url, mode=mode, read_timeout_seconds=30) as c:
            tools, cursor = [], None
            for _ in range(50):
                page = await c.list_tools(cursor=cursor) if cursor else await c.list_tools()
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
            names = sorted(t.name for t in tools)
            print(f"{mode}: {len(names)} tools: {', '.join(names)}")
            for prefix in ("wiki_", "tickets_", "handbook_"):
                assert any(n.startswith(prefix) for n in names), (prefix, names)
            read_only = next(t for t in tools if t.name.startswith("handbook_"))
            print(f"  schema of {read_only.name}: {read_only.inputSchema}")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1]), 120))
