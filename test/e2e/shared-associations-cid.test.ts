// Shared associations across gateway processes, the device offering a Connection ID: the tests
// with default settings (test/e2e/shared-associations.ts declares them).
import { after } from 'node:test';
import { killAll } from '../helpers/processes.js';
import { describeSharedAssociations } from './shared-associations.js';

after(killAll);
describeSharedAssociations(true, 'default settings');
