/** Fuzzing of the dtls parsers on the suite's time budget (targets and oracles: targets.ts). */
import { describe } from 'node:test';
import { fuzzLayer } from './budget.js';

void describe('fuzz: dtls', () => fuzzLayer('dtls'));
