# The spawner of shared/spawner.ts, in Python: the same requests and events on stdin/stdout (see there).
#
# Why Python first: os.posix_spawn is glibc's clone(CLONE_VM|CLONE_VFORK), so a start copies no page tables
# and makes neither process take copy-on-write faults afterwards. A fork, even from Perl's few MB, marks
# every page of the forking process read-only again and pays a fault (and, with two CPUs, a TLB shootdown)
# for each page it then writes; on a VM with page-table isolation that was 5 ms of CPU per command in the
# Perl spawner, and the spawns of trivial atoms were most of a worker's time (issue 18). Commands run as
# another user (uid/gid) are forked, as posix_spawn cannot change ids.
import os
import selectors
import signal
import struct
import sys
import time

# A signal to the worker's whole group (Ctrl-C, a service manager's or a pool's stop) is the worker's to act
# on: it stops its commands through us, and we end when it closes our input (issue 15). Once we lead
# a session of our own (below) such a signal no longer reaches us; this covers where we could not.
GROUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
for number in GROUP_SIGNALS:
    signal.signal(number, signal.SIG_IGN)
# What a command gets back to the default: those ignored here, and those Python ignores at start-up.
CHILD_DEFAULTS = set(GROUP_SIGNALS) | {signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD}

# A child subreaper: whatever a command leaves running when its shell exits becomes our child, so the caller
# can tell from our list of children that nothing escaped, without reading every process's environment.
is_reaper = False
try:
    import ctypes
    is_reaper = ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
except (ImportError, OSError, AttributeError):
    pass
# A session of our own, and each command a process group in it (not a session each): with the kernel's
# autogroup scheduling every session is one scheduling group with an equal share of the CPUs, so a session
# per command gave 80 running shells 80 shares against the one of the master or worker that serves them (a
# status read waited 40 ms at p50 for a CPU). In one session, command_nice (below) lowers them all at once.
# The session has no controlling terminal, as the commands had.
try:
    os.setsid()
except OSError:
    pass  # already a group leader (started so by hand): the commands still get groups of their own

# command_nice: how far below the worker's CPU priority the commands run, so that the daemons serving them answer
# at once when they take every CPU. Our own nice, which they inherit, is what counts where autogroups do not
# apply (a service's cgroup); our session's autogroup nice is what counts where they do. The kernel takes one
# autogroup write per 100 ms from the whole machine (EAGAIN otherwise): workers started together take turns.
NICE = int(sys.argv[1]) if len(sys.argv) > 1 else 0
AUTOGROUP_TRY_S = 0.1
AUTOGROUP_GIVE_UP_S = 30
if NICE > 0:
    try:
        os.nice(NICE)
    except OSError:
        pass


def nice_autogroup():
    """False while the kernel says try again later; True once written or when there is nothing to write."""
    try:
        fd = os.open('/proc/self/autogroup', os.O_WRONLY)
    except OSError:
        return True  # no autogroups here
    try:
        os.write(fd, b'%d' % NICE)
    except BlockingIOError:
        return False
    except OSError:
        pass
    finally:
        os.close(fd)
    return True
CHILDREN_FILE = f'/proc/{os.getpid()}/task/{os.getpid()}/children'

# SIGCHLD wakes the loop through a pipe (at C level, so one landing mid-turn is not lost).
wake_r, wake_w = os.pipe()
os.set_blocking(wake_r, False)
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda number, frame: None)

selector = selectors.DefaultSelector()
selector.register(0, selectors.EVENT_READ)
selector.register(wake_r, selectors.EVENT_READ)
kids = {}    # id -> {'pid', 'open': [registration], 'paused', 'group': registration or None}
by_pid = {}  # pid -> id, until reaped
owner = {}   # fd -> registration [id, stream (0 group, 1 out, 2 err), fd]; the selector carries the same list
out = bytearray()


def emit(op, ident, data):
    out.extend(struct.pack('>cII', op, ident, len(data)))
    out.extend(data)


def flush():
    view = memoryview(out)
    written = 0
    try:
        while written < len(view):
            written += os.write(1, view[written:])
    except OSError:
        os._exit(0)  # the worker is gone
    finally:
        view.release()
    del out[:]


def watch(ident, stream, fd):
    registration = [ident, stream, fd]
    owner[fd] = registration
    selector.register(fd, selectors.EVENT_READ, registration)
    return registration


def unwatch(registration):
    fd = registration[2]
    if owner.get(fd) is not registration:
        return
    del owner[fd]
    try:
        selector.unregister(fd)
    except KeyError:
        pass  # paused: not registered
    os.close(fd)


def group_ready(ident):
    kid = kids.get(ident)
    if kid is None or kid['group'] is None:
        return
    unwatch(kid['group'])
    kid['group'] = None
    emit(b'P', ident, str(kid['pid']).encode())


def child_environment(entries):
    env = {}
    for entry in entries:
        name, sep, value = entry.partition(b'=')
        if sep and name:
            env[name] = value
    return env


def forked_child(cwd, uid, gid, script, env, ow, ew, sw):
    """Runs in a forked child, as another user: never returns."""
    try:
        for number in CHILD_DEFAULTS:
            signal.signal(number, signal.SIG_DFL)
        os.setpgid(0, 0)
        os.close(sw)
        null = os.open('/dev/null', os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(ow, 1)
        os.dup2(ew, 2)
        if gid != b'':
            os.setgroups([int(gid)])
            os.setgid(int(gid))
        if uid != b'':
            os.setuid(int(uid))
        os.chdir(cwd)
        os.execve('/bin/bash', ['/bin/bash', '-c', script], env)
    except BaseException as error:  # nothing may return into the spawner's loop
        try:
            os.write(2, f'clusterrunner: could not start the command: {error}\n'.encode())
        except OSError:
            pass
    os._exit(127)


def start(ident, payload):
    cwd, uid, gid, script, *entries = payload.split(b'\0')
    if not os.path.isdir(cwd):
        emit(b'F', ident, b'the working directory ' + cwd + b' does not exist')
        return
    env = child_environment(entries)
    or_, ow = os.pipe()
    er, ew = os.pipe()
    group = None
    try:
        if uid == b'' and gid == b'':
            # The child starts in the spawner's cwd: chdir there for the spawn (one thread, nothing else runs).
            os.chdir(cwd)
            try:
                pid = os.posix_spawn(b'/bin/bash', [b'/bin/bash', b'-c', script], env, setpgroup=0, setsigdef=CHILD_DEFAULTS,
                                     file_actions=[(os.POSIX_SPAWN_OPEN, 0, '/dev/null', os.O_RDONLY, 0),
                                                   (os.POSIX_SPAWN_DUP2, ow, 1), (os.POSIX_SPAWN_DUP2, ew, 2)])
            finally:
                os.chdir('/')
        else:
            # The group pipe closes when the child leads its own process group: only then is its pid a group to signal.
            sr, sw = os.pipe()
            pid = os.fork()
            if pid == 0:
                forked_child(cwd, uid, gid, script, env, ow, ew, sw)
            os.close(sw)
            group = sr
    except OSError as error:
        for fd in (or_, ow, er, ew):
            os.close(fd)
        emit(b'F', ident, f'could not start the command: {error}'.encode())
        return
    os.close(ow)
    os.close(ew)
    # Non-blocking: a readiness event that outlived its pipe (closed this turn, its number reused) reads nothing.
    os.set_blocking(or_, False)
    os.set_blocking(er, False)
    kid = {'pid': pid, 'paused': False, 'open': [watch(ident, 1, or_), watch(ident, 2, er)], 'group': None}
    kids[ident] = kid
    by_pid[pid] = ident
    if group is None:
        emit(b'P', ident, str(pid).encode())
    else:
        kid['group'] = watch(ident, 0, group)


def escaped():
    """"1" unless, as a subreaper, we know every child of ours is a command's shell."""
    if not is_reaper:
        return b'1'
    try:
        with open(CHILDREN_FILE, 'rb') as children:
            listed = children.read().split()
    except OSError:
        return b'1'
    return b'1' if any(int(pid) not in by_pid for pid in listed) else b'0'


def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ident = by_pid.pop(pid, None)
        if ident is None:
            continue
        group_ready(ident)
        if os.WIFSIGNALED(status):
            code = b'-1 %d' % os.WTERMSIG(status)
        else:
            code = b'%d 0' % os.WEXITSTATUS(status)
        # Whatever the shell left behind is our child by now (reparented before its parent hears of the exit).
        emit(b'X', ident, code + b' ' + escaped())


def request(op, ident, payload):
    if op == b'S':
        start(ident, payload)
        return
    if op == b'Q':
        reap()
        emit(b'Q', ident, escaped())
        return
    kid = kids.get(ident)
    if kid is None:
        return
    if op == b'P' and not kid['paused']:
        kid['paused'] = True
        for registration in kid['open']:
            selector.unregister(registration[2])
    elif op == b'R' and kid['paused']:
        kid['paused'] = False
        for registration in kid['open']:
            selector.register(registration[2], selectors.EVENT_READ, registration)
    elif op == b'D':
        group_ready(ident)
        for registration in kid['open']:
            unwatch(registration)
        del kids[ident]


def main():
    pending = bytearray()
    autogroup_at = time.monotonic() if NICE > 0 else None  # the next try, None when done
    give_up_at = time.monotonic() + AUTOGROUP_GIVE_UP_S
    while True:
        if autogroup_at is not None and time.monotonic() >= autogroup_at:
            now = time.monotonic()
            autogroup_at = None if nice_autogroup() or now >= give_up_at else now + AUTOGROUP_TRY_S
        reap()
        flush()
        # The timeout covers a SIGCHLD that lands in the instant between the last check and the wait itself.
        for key, _ in selector.select(0.05 if by_pid else None if autogroup_at is None else AUTOGROUP_TRY_S):
            fd = key.fd
            if fd == wake_r:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                continue
            if fd == 0:
                data = os.read(0, 262144)
                if not data:
                    flush()
                    os._exit(0)
                pending.extend(data)
                while len(pending) >= 4:
                    (length,) = struct.unpack_from('>I', pending)
                    if len(pending) < 4 + length:
                        break
                    op, ident = struct.unpack_from('>cI', pending, 4)
                    request(op, ident, bytes(pending[9:4 + length]))
                    del pending[:4 + length]
                continue
            registration = key.data
            if registration is None or owner.get(fd) is not registration:
                continue  # closed earlier in this turn
            ident, stream = registration[0], registration[1]
            if stream == 0:
                group_ready(ident)
                continue
            try:
                data = os.read(fd, 65536)
            except (BlockingIOError, InterruptedError):
                continue
            if data:
                emit(b'O' if stream == 1 else b'E', ident, data)
                continue
            kid = kids.get(ident)
            if kid is not None:
                kid['open'] = [other for other in kid['open'] if other is not registration]
            unwatch(registration)
            emit(b'C', ident, str(stream).encode())


main()
