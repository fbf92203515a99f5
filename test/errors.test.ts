import test from 'ava';
import fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import {
  POSIX_CODES, PrismError, codeOfErrno, codeOfName, errnoOf, fromName, fromNodeError, fromWire,
} from '../src/errors.js';
import { controlError, controlErrorOf, decodeControl, decodeResponse, encode, encodeResponse, errorResponse, responseError } from '../src/protocol/codec.js';

test('every code has its own Linux errno number, and the number maps back to the code', (t) => {
  const seen = new Map<number, string>();
  for (const c of POSIX_CODES) {
    const n = errnoOf(c);
    t.true(Number.isInteger(n) && n > 0, c);
    t.false(seen.has(n), `${c} and ${seen.get(n)} share ${n}`);
    seen.set(n, c);
    t.is(codeOfErrno(n), c);
    t.is(codeOfName(c), c);
  }
});

test('the table holds Linux numbers: on Linux they agree with the OS', (t) => {
  if (process.platform !== 'linux') { t.pass('not Linux: nothing to compare with'); return; }
  const os = osConstants.errno as Record<string, number>;
  for (const c of POSIX_CODES) t.is(errnoOf(c), os[c], c);
});

test('a few numbers every peer knows', (t) => {
  t.is(errnoOf('ENOENT'), 2);
  t.is(errnoOf('EIO'), 5);
  t.is(errnoOf('EBUSY'), 16);
  t.is(errnoOf('EINVAL'), 22);
  t.is(errnoOf('ENOSYS'), 38);
  t.is(errnoOf('ENOTSUP'), 95);
  t.is(errnoOf('ESTALE'), 116);
  t.is(errnoOf('EDQUOT'), 122);
  t.is(new PrismError('EEXIST', 'x').errno, 17);
});

test('PrismError keeps the code and the detail apart; the message says both, for logs', (t) => {
  const e = new PrismError('ENOENT', 'no such file: a: b');
  t.is(e.code, 'ENOENT');
  t.is(e.detail, 'no such file: a: b');
  t.is(e.message, 'ENOENT: no such file: a: b');
});

test('VRPC replies round-trip every code with its detail, and the bytes keep the number', (t) => {
  for (const c of POSIX_CODES) {
    const bytes = encodeResponse(errorResponse(7, new PrismError(c, `went wrong: ${c}`)));
    const r = decodeResponse(bytes);
    t.is(r.errno, errnoOf(c));
    t.is(r.result, `${c}: went wrong: ${c}`, 'the message on the wire is CODE: detail, as before');
    const e = responseError(r);
    t.is(e.code, c);
    t.is(e.detail, `went wrong: ${c}`);
  }
});

test('an unknown wire number decodes to EIO with the number in the detail', (t) => {
  const e = fromWire(999, 'EWHAT: something');
  t.is(e.code, 'EIO');
  t.regex(e.detail, /999/);
  t.regex(e.detail, /EWHAT: something/);
});

test('a wire message without a code prefix (or with another code) is taken as it is', (t) => {
  t.is(fromWire(2, 'plain words').detail, 'plain words');
  t.is(fromWire(2, 'EEXIST: not ours').detail, 'EEXIST: not ours');
  t.is(fromWire(2, 'ENOENT:').detail, 'ENOENT:');
});

test('fromNodeError maps a system error by its code name, with the context before its message (the code once)', (t) => {
  const sys = (code: string, message = `${code}: something`) => Object.assign(new Error(message), { code, errno: -1 });
  for (const c of ['ENOENT', 'EACCES', 'ENOSPC', 'EDQUOT', 'EEXIST'] as const) {
    const e = fromNodeError(sys(c), '/some/file');
    t.true(e instanceof PrismError);
    t.is(e.code, c);
    t.is(e.detail, `/some/file: something`);
    t.is(e.message, `${c}: /some/file: something`);
  }
  t.is(fromNodeError(sys('EOPNOTSUPP')).code, 'ENOTSUP', 'another name for the same number');
  t.is(fromNodeError(sys('EMFILE')).code, 'EIO', 'a code outside the table');
  t.is(fromNodeError(sys('ERR_INVALID_ARG_TYPE')).code, 'EIO');
  t.is(fromNodeError(new Error('plain')).detail, 'plain');
  t.is(fromNodeError('a string', 'ctx').detail, 'ctx: a string');
  t.is(fromNodeError(null).code, 'EIO');
});

test('fromNodeError reads a positive errno (an addon\'s, a Linux number) but never Node\'s negative one', (t) => {
  t.is(fromNodeError(Object.assign(new Error('umount: busy'), { errno: 16 })).code, 'EBUSY');
  t.is(fromNodeError(Object.assign(new Error('x'), { errno: -2 })).code, 'EIO');
});

test('fromNodeError returns a PrismError as it is', (t) => {
  const e = new PrismError('EROFS', 'read-only');
  t.is(fromNodeError(e, 'context'), e);
});

test('control messages carry the name and the detail; an unknown name is EIO', (t) => {
  const v = decodeControl(encode(controlError(new PrismError('EBUSY', 'in use'))));
  t.deepEqual(v, ['error', 'EBUSY', 'in use']);
  const e = controlErrorOf(v)!;
  t.is(e.code, 'EBUSY');
  t.is(e.detail, 'in use');
  t.deepEqual(controlError(Object.assign(new Error('gone'), { code: 'ENOENT' })), ['error', 'ENOENT', 'gone']);
  t.is(controlErrorOf(['ok', 1]), null);
  const odd = fromName('EBOGUS', 'what');
  t.is(odd.code, 'EIO');
  t.regex(odd.detail, /EBOGUS/);
  t.is(fromName('toString', 'x').code, 'EIO', 'names are looked up in the table only');
  t.is(fromName(42, 'x').code, 'EIO');
});

test('docs/protocol.md lists the table as it is', (t) => {
  const doc = fs.readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
  const listed = [...doc.matchAll(/\| (E[A-Z0-9]+) \| (\d+) /g)].map((m) => `${m[1]} ${m[2]}`).sort();
  t.deepEqual(listed, POSIX_CODES.map((c) => `${c} ${errnoOf(c)}`).sort());
});
