"""What gateway/, inventory/ and live/ all need and none of them owns (asyncio helpers)."""
