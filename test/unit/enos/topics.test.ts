import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  activationTopic,
  downlinkTopicPatterns,
  EnosError,
  isDownlinkTopic,
  parseMqttTopic,
  parseTopicPath,
  topicToCoapPath,
  type TopicClass,
  type TopicInfo,
  type TopicRejectReason,
} from '../../../src/enos/index.js';

const sys = (...rest: string[]) => ['topic', 'sys', 'pk1', 'dk1', ...rest];
const ext = (...rest: string[]) => ['topic', 'ext', 'session', 'pk1', 'dk1', ...rest];

function ok(segments: readonly string[]): TopicInfo {
  const r = parseTopicPath(segments);
  assert.ok(r.ok, `expected /${segments.join('/')} to classify, got ${r.ok ? '' : r.reason}`);
  return r.topic;
}

function reason(segments: readonly string[]): TopicRejectReason {
  const r = parseTopicPath(segments);
  assert.ok(!r.ok, `expected /${segments.join('/')} to be rejected`);
  return r.reason;
}

/** MQTT 3.1.1 §4.7 filter matching, for checking the subscription filters. */
function mqttMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

void describe('parseTopicPath: uplinks', () => {
  const uplinks = [
    'thing/measurepoint/post',
    'thing/measurepoint/post/batch',
    'thing/measurepoint/resume',
    'thing/event/overheat/post',
    'thing/attribute/update',
    'thing/attribute/query',
    'thing/attribute/delete',
    'thing/tag/update',
    'thing/tag/query',
    'thing/tag/delete',
    'thing/tsltemplate/get',
    'ota/device/inform',
    'ota/device/progress',
    'ota/device/request',
    'ota/device/getversion',
    'thing/log/post',
  ];
  for (const tail of uplinks) {
    void it(`${tail} → uplink with a _reply topic`, () => {
      const t = ok(sys(...tail.split('/')));
      assert.deepEqual(t, {
        mqttTopic: `/sys/pk1/dk1/${tail}`,
        productKey: 'pk1',
        deviceKey: 'dk1',
        class: 'uplink',
        replyTopic: `/sys/pk1/dk1/${tail}_reply`,
        raw: false,
        commandTopic: undefined,
      });
    });
  }

  void it('thing/model/up_raw → uplink-raw, raw, reply on up_raw_reply', () => {
    const t = ok(sys('thing', 'model', 'up_raw'));
    assert.equal(t.class, 'uplink-raw');
    assert.equal(t.raw, true);
    assert.equal(t.replyTopic, '/sys/pk1/dk1/thing/model/up_raw_reply');
  });

  void it('ext/session combine/login|logout → sub-device-session with a reply', () => {
    for (const op of ['login', 'logout']) {
      const t = ok(ext('combine', op));
      assert.equal(t.class, 'sub-device-session');
      assert.equal(t.mqttTopic, `/ext/session/pk1/dk1/combine/${op}`);
      assert.equal(t.replyTopic, `/ext/session/pk1/dk1/combine/${op}_reply`);
      assert.equal(t.productKey, 'pk1');
      assert.equal(t.deviceKey, 'dk1');
    }
  });

  void it('ext/session/{pk}/{dk}/thing/activate/info → activate', () => {
    assert.deepEqual(
      ok(['topic', 'ext', 'session', 'MuGsF6W4', '15bBZlRknc', 'thing', 'activate', 'info']),
      {
        mqttTopic: '/ext/session/MuGsF6W4/15bBZlRknc/thing/activate/info',
        productKey: 'MuGsF6W4',
        deviceKey: '15bBZlRknc',
        class: 'activate',
        replyTopic: undefined,
        raw: false,
        commandTopic: undefined,
      },
    );
  });
});

void describe('parseTopicPath: commands (docs/protocol.md)', () => {
  const downlinks: [string, boolean][] = [
    ['thing/service/restart', false],
    ['thing/service/measurepoint/set', false],
    ['thing/service/measurepoint/get', false],
    ['thing/model/down_raw', true],
    ['rrpc/request/1234', false],
    ['thing/enable', false],
    ['thing/disable', false],
    ['thing/delete', false],
    ['ota/device/upgrade', false],
  ];
  for (const [tail, raw] of downlinks) {
    const topic = `/sys/pk1/dk1/${tail}`;
    void it(`${tail} → command-fetch; ${tail.startsWith('rrpc') ? 'rrpc/response' : '_reply'} → command-reply`, () => {
      assert.deepEqual(ok(sys(...tail.split('/'))), {
        mqttTopic: topic,
        productKey: 'pk1',
        deviceKey: 'dk1',
        class: 'command-fetch',
        replyTopic: undefined,
        raw,
        commandTopic: topic,
      });
      const replyTail = tail.startsWith('rrpc/')
        ? tail.replace('request', 'response')
        : `${tail}_reply`;
      assert.deepEqual(ok(sys(...replyTail.split('/'))), {
        mqttTopic: `/sys/pk1/dk1/${replyTail}`,
        productKey: 'pk1',
        deviceKey: 'dk1',
        class: 'command-reply',
        replyTopic: undefined,
        raw,
        commandTopic: topic,
      });
      assert.equal(isDownlinkTopic(topic), true);
      assert.equal(isDownlinkTopic(`/sys/pk1/dk1/${replyTail}`), false);
    });
  }

  void it('thing/service/measurepoint (three levels) is the service "measurepoint"', () => {
    const t = ok(sys('thing', 'service', 'measurepoint'));
    assert.equal(t.class, 'command-fetch');
    assert.equal(ok(sys('thing', 'service', 'measurepoint_reply')).class, 'command-reply');
    assert.equal(
      ok(sys('thing', 'service', 'measurepoint', 'set_reply')).commandTopic,
      '/sys/pk1/dk1/thing/service/measurepoint/set',
    );
  });

  void it('a last variable level ending in _reply is always a reply', () => {
    const t = ok(sys('thing', 'service', 'x_reply_reply'));
    assert.equal(t.class, 'command-reply');
    assert.equal(t.commandTopic, '/sys/pk1/dk1/thing/service/x_reply');
    assert.equal(reason(sys('thing', 'service', '_reply')), 'unknown-shape');
  });
});

void describe('parseTopicPath: rejected', () => {
  const cases: [string, readonly string[], TopicRejectReason][] = [
    ['no segments', [], 'not-topic'],
    ['not under /topic', ['sys', 'pk1', 'dk1', 'thing', 'measurepoint', 'post'], 'not-topic'],
    [
      'Topic in other case',
      ['Topic', 'sys', 'pk1', 'dk1', 'thing', 'measurepoint', 'post'],
      'not-topic',
    ],
    ['.well-known/core', ['.well-known', 'core'], 'not-topic'],
    ['/topic alone', ['topic'], 'unknown-shape'],
    ['/topic/sys/pk/dk', sys(), 'unknown-shape'],
    ['unknown root', ['topic', 'ext', 'other', 'pk1', 'dk1', 'combine', 'login'], 'unknown-shape'],
    ['unlisted sys topic', sys('thing', 'sub', 'register'), 'unknown-shape'],
    [
      'uplink reply topic (platform → device)',
      sys('thing', 'measurepoint', 'post_reply'),
      'unknown-shape',
    ],
    ['activation under sys', sys('thing', 'activate', 'info'), 'unknown-shape'],
    ['activation reply', ext('thing', 'activate', 'info_reply'), 'unknown-shape'],
    ['uplink under ext/session', ext('thing', 'measurepoint', 'post'), 'unknown-shape'],
    ['partial topic', sys('thing', 'measurepoint'), 'unknown-shape'],
    ['extra level', sys('thing', 'measurepoint', 'post', 'batch', 'x'), 'unknown-shape'],
    ['rrpc/request reply with _reply', sys('rrpc', 'request', '7_reply'), 'unknown-shape'],
    ['very many segments', sys(...Array.from({ length: 1000 }, () => 'x')), 'unknown-shape'],
    ['case matters', sys('Thing', 'measurepoint', 'post'), 'unknown-shape'],
    [
      '+ as deviceKey (wildcard injection)',
      ['topic', 'sys', 'pk1', '+', 'thing', 'measurepoint', 'post'],
      'bad-segment',
    ],
    [
      '# as productKey',
      ['topic', 'sys', '#', 'dk1', 'thing', 'measurepoint', 'post'],
      'bad-segment',
    ],
    ['# as serviceId', sys('thing', 'service', '#'), 'bad-segment'],
    ['+ as eventId', sys('thing', 'event', '+', 'post'), 'bad-segment'],
    [
      '+ inside a key',
      ['topic', 'sys', 'pk1', 'a+b', 'thing', 'measurepoint', 'post'],
      'bad-segment',
    ],
    [
      '/ inside a segment',
      ['topic', 'sys', 'pk1/other', 'dk1', 'thing', 'measurepoint', 'post'],
      'bad-segment',
    ],
    ['/ inside the tail', sys('thing/measurepoint', 'post'), 'bad-segment'],
    ['empty segment (trailing slash)', sys('thing', 'measurepoint', 'post', ''), 'bad-segment'],
    [
      'empty deviceKey',
      ['topic', 'sys', 'pk1', '', 'thing', 'measurepoint', 'post'],
      'bad-segment',
    ],
    ['NUL', sys('thing', 'event', 'a\u0000', 'post'), 'bad-segment'],
    ['control character', sys('thing', 'service', 'x\u001b'), 'bad-segment'],
    ['C1 control', ['topic', 'sys', 'pk1', 'dk\u0085', 'thing', 'enable'], 'bad-segment'],
    ['white space', sys('thing', 'service', 'a b'), 'bad-segment'],
    ['comma', ['topic', 'sys', 'pk1', 'd,k', 'thing', 'enable'], 'bad-segment'],
    ['lone surrogate', sys('thing', 'service', '\ud800'), 'bad-segment'],
    ['over-long segment', sys('thing', 'service', 'x'.repeat(129)), 'bad-segment'],
    [
      'bad literal level is checked too',
      ['topic', 'sys', 'pk1', 'dk1', 'thing', '#'],
      'bad-segment',
    ],
  ];
  for (const [name, segments, why] of cases) {
    void it(`${name} → ${why}`, () => assert.equal(reason(segments), why));
  }

  void it('unicode keys classify', () => {
    const t = ok(['topic', 'sys', 'Produkt-ü', 'Gerät-😀', 'thing', 'measurepoint', 'post']);
    assert.equal(t.mqttTopic, '/sys/Produkt-ü/Gerät-😀/thing/measurepoint/post');
  });

  void it('never throws and never yields a wildcard or empty level in an accepted topic', () => {
    const level = fc.oneof(
      fc.constantFrom(
        'topic',
        'sys',
        'ext',
        'session',
        'thing',
        'service',
        'measurepoint',
        'post',
        'set',
        'x_reply',
        '+',
        '#',
        '',
        'a/b',
        'rrpc',
        'request',
        'response',
      ),
      fc.string({ maxLength: 5 }),
    );
    fc.assert(
      fc.property(fc.array(level, { maxLength: 10 }), (segments) => {
        const r = parseTopicPath(segments);
        if (r.ok) {
          const levels = r.topic.mqttTopic.split('/').slice(1);
          assert.equal(levels.length, segments.length - 1);
          for (const l of levels) assert.ok(l !== '' && !/[+#]/.test(l));
        }
      }),
      { numRuns: 3000 },
    );
  });
});

void describe('parseMqttTopic / isDownlinkTopic', () => {
  void it('classifies MQTT topics with the same table', () => {
    const r = parseMqttTopic('/sys/pk1/dk1/thing/service/restart');
    assert.ok(r.ok && r.topic.class === 'command-fetch' && r.topic.deviceKey === 'dk1');
    assert.deepEqual(parseMqttTopic('sys/pk1/dk1/thing/service/restart'), {
      ok: false,
      reason: 'not-topic',
    });
    assert.deepEqual(parseMqttTopic('/sys/pk1/dk1/thing/service/#'), {
      ok: false,
      reason: 'bad-segment',
    });
    assert.deepEqual(parseMqttTopic('/sys/pk1//thing/enable'), {
      ok: false,
      reason: 'bad-segment',
    });
    assert.deepEqual(parseMqttTopic('/topic/sys/pk1/dk1/thing/enable'), {
      ok: false,
      reason: 'unknown-shape',
    });
  });

  void it('isDownlinkTopic is false for uplinks, replies, activation and junk', () => {
    for (const t of [
      '/sys/pk1/dk1/thing/measurepoint/post',
      '/sys/pk1/dk1/thing/measurepoint/post_reply',
      '/sys/pk1/dk1/thing/service/restart_reply',
      '/ext/session/pk1/dk1/thing/activate/info',
      '/sys/pk1/dk1/thing/service/+',
      '',
      '/',
    ]) {
      assert.equal(isDownlinkTopic(t), false, t);
    }
  });
});

void describe('downlinkTopicPatterns', () => {
  const filters = downlinkTopicPatterns('pk1', 'dk1');

  void it('lists the command topic filters of one device', () => {
    assert.deepEqual(filters, [
      '/sys/pk1/dk1/thing/service/#',
      '/sys/pk1/dk1/thing/model/down_raw',
      '/sys/pk1/dk1/rrpc/request/+',
      '/sys/pk1/dk1/thing/enable',
      '/sys/pk1/dk1/thing/disable',
      '/sys/pk1/dk1/thing/delete',
      '/sys/pk1/dk1/ota/device/upgrade',
    ]);
  });

  void it('covers every downlink topic and no uplink', () => {
    const commands = [
      'thing/service/restart',
      'thing/service/measurepoint/set',
      'thing/service/measurepoint/get',
      'thing/model/down_raw',
      'rrpc/request/9',
      'thing/enable',
      'thing/disable',
      'thing/delete',
      'ota/device/upgrade',
    ].map((t) => `/sys/pk1/dk1/${t}`);
    for (const c of commands) {
      assert.ok(isDownlinkTopic(c), c);
      assert.ok(
        filters.some((f) => mqttMatches(f, c)),
        `no filter for ${c}`,
      );
    }
    for (const u of [
      'thing/measurepoint/post',
      'thing/model/up_raw',
      'rrpc/response/9',
      'thing/event/e/post',
    ]) {
      assert.ok(!filters.some((f) => mqttMatches(f, `/sys/pk1/dk1/${u}`)), u);
    }
    assert.ok(!filters.some((f) => mqttMatches(f, '/sys/pk1/dk2/thing/enable')), 'other device');
  });

  void it('refuses keys that would inject wildcards or levels', () => {
    for (const [pk, dk] of [
      ['pk1', '+'],
      ['#', 'dk1'],
      ['pk1', 'a/b'],
      ['', 'dk1'],
    ] as const) {
      assert.throws(
        () => downlinkTopicPatterns(pk, dk),
        (e: unknown) => e instanceof EnosError && e.code === 'ENOS_TOPIC',
      );
      assert.throws(() => activationTopic(pk, dk), EnosError);
    }
  });
});

void describe('activationTopic / topicToCoapPath', () => {
  void it('builds the activation topic and the option 2100 path', () => {
    assert.equal(activationTopic('pk1', 'dk1'), '/ext/session/pk1/dk1/thing/activate/info');
    assert.equal(
      topicToCoapPath('/sys/pk1/dk1/thing/service/restart'),
      '/topic/sys/pk1/dk1/thing/service/restart',
    );
    const back = ok(topicToCoapPath(activationTopic('pk1', 'dk1')).split('/').slice(1));
    const cls: TopicClass = back.class;
    assert.equal(cls, 'activate');
  });
});

describe('parseTopicPath refusals', () => {
  it('are shared objects: a refused path allocates nothing for its answer', () => {
    // the records bench's GET /nothing is refused here on every request
    const notTopic = parseTopicPath(['nothing']);
    assert.deepEqual(notTopic, { ok: false, reason: 'not-topic' });
    assert.equal(parseTopicPath(['other']), notTopic);
    assert.equal(parseTopicPath([]), notTopic);
    const unknown = parseTopicPath(sys('no', 'such', 'shape'));
    assert.deepEqual(unknown, { ok: false, reason: 'unknown-shape' });
    assert.equal(parseTopicPath(['topic', 'nope', 'pk1']), unknown);
    const bad = parseTopicPath(sys('thing', 'a b'));
    assert.deepEqual(bad, { ok: false, reason: 'bad-segment' });
    assert.equal(parseTopicPath(sys('thing', 'c d')), bad);
    assert.ok(Object.isFrozen(notTopic) && Object.isFrozen(unknown) && Object.isFrozen(bad));
  });
});
