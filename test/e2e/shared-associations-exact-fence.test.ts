// Shared associations across gateway processes with `associationFenceRecords: 0`, the device
// offering a Connection ID and not (test/e2e/shared-associations.ts declares the tests).
import { after } from 'node:test';
import { killAll } from '../helpers/processes.js';
import { describeSharedAssociations } from './shared-associations.js';

after(killAll);
for (const withCid of [true, false]) describeSharedAssociations(withCid, 'exact fence');
