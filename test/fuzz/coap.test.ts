/** Fuzzing of the coap parsers on the suite's time budget (targets and oracles: targets.ts). */
import { describe } from 'node:test';
import { fuzzLayer } from './budget.js';

void describe('fuzz: coap', () => fuzzLayer('coap'));
