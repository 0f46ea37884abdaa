"""The inbox's consumer contract: in order, at once, never re-entered, timers re-armed
only when the deadline moves."""
import asyncio

from rtmbotd.inbox import Inbox


def test_items_are_consumed_at_once_in_order_and_never_reentrantly():
    async def scenario():
        handled, depth = [], []
        inbox: Inbox

        def consume():
            depth.append(len(depth))
            while len(inbox):
                item = inbox.get_nowait()
                handled.append(item)
                if item == "a":
                    inbox.put("a2")          # a handler posting: same run, after "b"
            depth.pop()
        inbox = Inbox(asyncio.get_running_loop(), consume)
        inbox.put("early")                   # before start(): waits
        assert handled == []
        inbox.start()
        assert handled == ["early"]
        inbox._items.extend(["a", "b"])      # as if both arrived together
        inbox.kick()
        assert handled == ["early", "a", "b", "a2"]
        inbox.put_threadsafe("t")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return handled
    assert asyncio.run(scenario())[-1] == "t"


def test_deadline_runs_the_consumer_and_rearms_only_when_it_moves():
    async def scenario():
        loop = asyncio.get_running_loop()
        runs = []
        inbox = Inbox(loop, lambda: runs.append(loop.time()))
        inbox.start()
        runs.clear()
        now = loop.time()
        inbox.wake_at(now + 0.05, now)
        first = inbox._timer
        inbox.wake_at(now + 0.05, now)
        assert inbox._timer is first                    # same deadline: same timer
        inbox.wake_at(now + 0.02, now)
        assert inbox._timer is not first and first.cancelled()
        await asyncio.sleep(0.1)
        assert len(runs) == 1 and runs[0] >= now + 0.02
        inbox.wake_at(loop.time() + 0.01, loop.time())
        inbox.close()                                   # no timer, no consuming after close
        inbox.put("late")
        await asyncio.sleep(0.05)
        return runs, len(inbox)
    runs, left = asyncio.run(scenario())
    assert len(runs) == 1 and left == 1
