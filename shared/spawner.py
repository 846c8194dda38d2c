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

# A signal to the worker's whole group (Ctrl-C, a service manager's or a pool's stop) is the worker's to act
# on: it stops its commands through us, and we end when it closes our input (issue 15).
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
kids = {}    # id -> {'pid', 'open': [registration], 'paused', 'session': registration or None}
by_pid = {}  # pid -> id, until reaped
owner = {}   # fd -> registration [id, stream (0 session, 1 out, 2 err), fd]; the selector carries the same list
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


def session_ready(ident):
    kid = kids.get(ident)
    if kid is None or kid['session'] is None:
        return
    unwatch(kid['session'])
    kid['session'] = None
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
        os.setsid()
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
    session = None
    try:
        if uid == b'' and gid == b'':
            # The child starts in the spawner's cwd: chdir there for the spawn (one thread, nothing else runs).
            os.chdir(cwd)
            try:
                pid = os.posix_spawn(b'/bin/bash', [b'/bin/bash', b'-c', script], env, setsid=True, setsigdef=CHILD_DEFAULTS,
                                     file_actions=[(os.POSIX_SPAWN_OPEN, 0, '/dev/null', os.O_RDONLY, 0),
                                                   (os.POSIX_SPAWN_DUP2, ow, 1), (os.POSIX_SPAWN_DUP2, ew, 2)])
            finally:
                os.chdir('/')
        else:
            # The session pipe closes when the child has its own session: only then is its pid a group to signal.
            sr, sw = os.pipe()
            pid = os.fork()
            if pid == 0:
                forked_child(cwd, uid, gid, script, env, ow, ew, sw)
            os.close(sw)
            session = sr
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
    kid = {'pid': pid, 'paused': False, 'open': [watch(ident, 1, or_), watch(ident, 2, er)], 'session': None}
    kids[ident] = kid
    by_pid[pid] = ident
    if session is None:
        emit(b'P', ident, str(pid).encode())
    else:
        kid['session'] = watch(ident, 0, session)


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
        session_ready(ident)
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
        session_ready(ident)
        for registration in kid['open']:
            unwatch(registration)
        del kids[ident]


def main():
    pending = bytearray()
    while True:
        reap()
        flush()
        # The timeout covers a SIGCHLD that lands in the instant between the last check and the wait itself.
        for key, _ in selector.select(0.05 if by_pid else None):
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
                session_ready(ident)
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
