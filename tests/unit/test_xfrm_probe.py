"""The ESP probe: one refusal answers on a kernel without ESP; a kernel that ships ESP is asked again
(its first answer on a starved boot can be a refusal), each time with a fresh SPI, until a deadline."""

import errno

from ipsec.engine import xfrm
from ipsec.engine import xfrm_codec as x


class Kernel:
    """Answers NEWSA with the errnos in ``refusals`` first, then takes it. Records the SPIs asked."""

    def __init__(self, refusals: list[int]):
        self.refusals = list(refusals)
        self.spis: list[str] = []  # one per NEWSA asked
        self.deleted: list[str] = []

    def connect(self):
        kernel = self

        class Sock:
            def request(self, what, build):
                msg = build(7)
                typ = int.from_bytes(msg[4:6], "little")
                if typ == x.XFRM_MSG_NEWSA:
                    kernel.spis.append(what)
                    if kernel.refusals:
                        raise xfrm.XfrmError(what, kernel.refusals.pop(0), "Requested AEAD algorithm not found")
                else:
                    kernel.deleted.append(what)

            def close(self):
                pass

        return Sock()


def sockets(answer):
    """A connect() whose sockets hand each request (what, encoded message) to ``answer``."""

    class Sock:
        def request(self, what, build):
            answer(what, build(1))

        def close(self):
            pass

    return Sock


class Clock:
    def __init__(self):
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self):
        return self.t

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s


def run(kernel, ships, deadline=30.0):
    clock = Clock()
    ok = xfrm.probe(deadline_s=deadline, ships_esp=ships, sleep=clock.sleep, clock=clock.now,
                    connect=kernel.connect)
    return ok, clock


def test_a_kernel_without_esp_is_answered_by_one_refusal():
    kernel = Kernel([errno.ENOSYS] * 10)
    ok, clock = run(kernel, ships=False)
    assert ok is False and len(kernel.spis) == 1 and clock.sleeps == []


def test_a_kernel_that_ships_esp_is_asked_again_after_a_passing_refusal():
    kernel = Kernel([errno.ENOSYS, errno.ENOENT])
    ok, clock = run(kernel, ships=True)
    assert ok is True and len(kernel.spis) == 3 and clock.sleeps == [0.5, 1.0]
    assert len(kernel.deleted) == 1  # the probe state that was taken is removed again


def test_a_kernel_that_ships_esp_but_never_takes_it_gives_up_at_the_deadline():
    kernel = Kernel([errno.ENOSYS] * 100)
    ok, clock = run(kernel, ships=True, deadline=30.0)
    assert ok is False and clock.t <= 30.0 and max(clock.sleeps) == 4.0 and len(kernel.spis) > 5


def test_a_kernel_that_does_not_answer_is_not_asked_again():
    kernel = Kernel([errno.ETIMEDOUT])
    ok, _ = run(kernel, ships=True)
    assert ok is False and len(kernel.spis) == 1


def test_each_try_asks_for_a_fresh_spi():
    seen = []

    def answer(what, msg):
        if int.from_bytes(msg[4:6], "little") == x.XFRM_MSG_NEWSA:
            seen.append(bytes(msg))
            if len(seen) < 3:
                raise xfrm.XfrmError(what, errno.EEXIST, None)

    connect = sockets(answer)
    clock = Clock()
    assert xfrm.probe(ships_esp=True, sleep=clock.sleep, clock=clock.now, connect=connect) is True
    assert len(set(seen)) == 3


def test_no_xfrm_socket_is_a_refusal_not_a_crash():
    def connect():
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    clock = Clock()
    assert xfrm.probe(ships_esp=False, sleep=clock.sleep, clock=clock.now, connect=connect) is False


def test_the_kernel_ships_esp_when_its_module_tree_lists_esp4(tmp_path):
    assert xfrm.kernel_ships_esp("6.1.0-x", root=tmp_path) is False
    mods = tmp_path / "lib/modules/6.1.0-x"
    mods.mkdir(parents=True)
    (mods / "modules.dep").write_text("kernel/net/ipv4/ah4.ko: kernel/net/xfrm/xfrm_algo.ko\n")
    assert xfrm.kernel_ships_esp("6.1.0-x", root=tmp_path) is False
    (mods / "modules.dep").write_text("kernel/net/ipv4/esp4.ko: kernel/net/xfrm/xfrm_algo.ko\n")
    assert xfrm.kernel_ships_esp("6.1.0-x", root=tmp_path) is True
    (mods / "modules.dep").unlink()
    (tmp_path / "sys/module/esp4").mkdir(parents=True)
    assert xfrm.kernel_ships_esp("6.1.0-x", root=tmp_path) is True


def test_a_state_the_kernel_took_answers_even_if_its_cleanup_fails():
    def answer(what, msg):
        if int.from_bytes(msg[4:6], "little") != x.XFRM_MSG_NEWSA:
            raise xfrm.XfrmError(what, errno.ENOBUFS, None)

    clock = Clock()
    assert xfrm.probe(ships_esp=True, sleep=clock.sleep, clock=clock.now, connect=sockets(answer)) is True
    assert clock.sleeps == []
